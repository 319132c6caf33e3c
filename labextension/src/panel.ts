/**
 * The left-sidebar panel: pools, handed-out sandboxes, and what can be done with them.
 *
 * Plain DOM on a Lumino widget. Sandbox rows are keyed by id and updated in place, so a
 * refresh never replaces a button under the pointer or the command being typed.
 */
import { Dialog, showDialog } from '@jupyterlab/apputils';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import {
  IOverview,
  ISandbox,
  callTool,
  createSandbox,
  getOverview,
  releaseSandbox,
  textParts
} from './api';

export interface IPanelOptions {
  /** Open the virtual desktop of a gui sandbox. */
  openDesktop: (sandbox: ISandbox) => void;
  /** Open the screenshot viewer of a browser sandbox. */
  openBrowser: (sandbox: ISandbox) => void;
}

export interface IPanelSettings {
  /** Seconds between refreshes. */
  refreshInterval: number;
  /** The type preselected in the dropdown. */
  defaultType: string;
}

/** A DOM element with a class, optional `data-testid`, and text. */
function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  testid?: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (testid) {
    node.dataset.testid = testid;
  }
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

function button(className: string, testid: string, label: string): HTMLButtonElement {
  const node = el('button', `jp-Button jp-mod-styled jp-mod-small ${className}`, testid, label);
  node.type = 'button';
  return node;
}

/** "12s", "4m", "3h", "2d" ago, from unix seconds. */
export function formatAge(unixSeconds: number, now = Date.now() / 1000): string {
  const seconds = Math.max(0, Math.round(now - unixSeconds));
  if (seconds < 60) {
    return `${seconds}s`;
  }
  if (seconds < 3600) {
    return `${Math.floor(seconds / 60)}m`;
  }
  if (seconds < 86400) {
    return `${Math.floor(seconds / 3600)}h`;
  }
  return `${Math.floor(seconds / 86400)}d`;
}

/**
 * The short form of a sandbox id shown in lists (the full id is in the tooltip): the start
 * of its random tail, as in `runtime-sandbox-container-7l14zwi9…` → `7l14zwi9`.
 */
export function shortId(id: string): string {
  if (id.length <= 12) {
    return id;
  }
  const tail = id.slice(id.lastIndexOf('-') + 1) || id;
  return tail.slice(0, 8);
}

function hasBrowser(sandbox: ISandbox & { browser?: boolean }): boolean {
  return sandbox.browser ?? sandbox.type === 'browser';
}

/** One sandbox's card: its cells are rewritten on refresh, its buttons are kept. */
class SandboxRow {
  readonly node = el('li', 'jp-SandboxPanel-sandbox', 'sandbox-row');
  private readonly state = el('span', 'jp-SandboxPanel-state', 'sandbox-state');
  private readonly details = el('div', 'jp-SandboxPanel-details', 'sandbox-details');

  constructor(
    readonly sandbox: ISandbox,
    actions: {
      run: (row: SandboxRow) => void;
      release: (row: SandboxRow) => void;
      desktop: (row: SandboxRow) => void;
      browser: (row: SandboxRow) => void;
    }
  ) {
    this.node.dataset.sandboxId = sandbox.id;
    this.node.dataset.sandboxType = sandbox.type;
    const title = el('div', 'jp-SandboxPanel-title');
    const id = el('code', 'jp-SandboxPanel-id', 'sandbox-id', shortId(sandbox.id));
    id.title = sandbox.id;
    title.append(id, el('span', 'jp-SandboxPanel-type', 'sandbox-type', sandbox.type), this.state);

    const buttons = el('div', 'jp-SandboxPanel-actions');
    const run = button('jp-SandboxPanel-runButton', 'sandbox-run-button', 'Run');
    run.onclick = () => actions.run(this);
    buttons.append(run);
    if (sandbox.desktop) {
      const desktop = button('jp-SandboxPanel-desktopButton', 'sandbox-desktop-button', 'Desktop');
      desktop.onclick = () => actions.desktop(this);
      buttons.append(desktop);
    }
    if (hasBrowser(sandbox)) {
      const browser = button('jp-SandboxPanel-browserButton', 'sandbox-browser-button', 'Browser');
      browser.onclick = () => actions.browser(this);
      buttons.append(browser);
    }
    const release = button(
      'jp-SandboxPanel-releaseButton jp-mod-warn',
      'sandbox-release-button',
      'Release'
    );
    release.onclick = () => actions.release(this);
    buttons.append(release);

    this.node.append(title, this.details, buttons);
    this.update(sandbox);
  }

  update(sandbox: ISandbox): void {
    this.state.textContent = sandbox.state;
    this.state.dataset.state = sandbox.state;
    const session = sandbox.session ? `session ${sandbox.session}` : 'no session';
    const active =
      sandbox.last_active === null
        ? 'not used yet'
        : `active ${formatAge(sandbox.last_active)} ago`;
    this.details.textContent = `${session} · age ${formatAge(sandbox.created)} · ${active}`;
  }
}

export class SandboxPanel extends Widget {
  private readonly errorLine = el('div', 'jp-SandboxPanel-error', 'sandbox-error');
  private readonly errorText = el('span', 'jp-SandboxPanel-errorText');
  private readonly typeSelect = el('select', 'jp-SandboxPanel-typeSelect', 'sandbox-type-select');
  private readonly newButton = button('jp-mod-accept', 'sandbox-new-button', 'New sandbox');
  private readonly pools = el('tbody', 'jp-SandboxPanel-poolRows', 'sandbox-pools');
  private readonly list = el('ul', 'jp-SandboxPanel-list', 'sandbox-list');
  private readonly empty = el(
    'p',
    'jp-SandboxPanel-empty',
    'sandbox-empty',
    'No sandboxes in use.'
  );
  private readonly runSection = el('section', 'jp-SandboxPanel-run', 'sandbox-run');
  private readonly runTarget = el('code', 'jp-SandboxPanel-runTarget', 'sandbox-run-target');
  private readonly runInput = el(
    'input',
    'jp-mod-styled jp-SandboxPanel-runInput',
    'sandbox-run-input'
  );
  private readonly runOutput = el('pre', 'jp-SandboxPanel-output', 'sandbox-run-output');
  private readonly rows = new Map<string, SandboxRow>();
  private readonly poll: Poll;
  private settings: IPanelSettings = { refreshInterval: 3, defaultType: 'base' };
  private types: string[] = [];
  private typeChosen = false;
  private runIdentity: string | null = null;
  /** Refreshes started: only the newest one renders. */
  private requests = 0;
  /** Whether the error shown came from a refresh (cleared by the next good one). */
  private errorFromPoll = false;

  constructor(private readonly options: IPanelOptions) {
    super();
    this.addClass('jp-SandboxPanel');
    this.node.dataset.testid = 'sandbox-panel';
    this.buildDOM();
    this.poll = new Poll({
      factory: () => this.refresh(),
      frequency: { interval: this.settings.refreshInterval * 1000, backoff: false },
      name: 'jupyter-sandbox:overview',
      // Stand by while the sidebar panel is collapsed or the browser tab is hidden.
      standby: () => !this.isVisible || 'when-hidden'
    });
  }

  /** Apply the user's settings (on load and whenever they change). */
  configure(settings: IPanelSettings): void {
    this.settings = settings;
    const interval = Math.max(1, settings.refreshInterval) * 1000;
    this.poll.frequency = {
      backoff: false,
      interval,
      max: Math.max(interval, this.poll.frequency.max)
    };
    if (!this.typeChosen) {
      this.fillTypes(this.types);
    }
  }

  /** Fetch the overview now and render it; errors go to the error line. */
  async refresh(): Promise<void> {
    const request = ++this.requests;
    let overview: IOverview;
    try {
      overview = await getOverview();
    } catch (error) {
      if (request === this.requests) {
        this.showError(`Could not list sandboxes: ${(error as Error).message}`, true);
      }
      return;
    }
    if (request !== this.requests) {
      return; // a newer refresh (after a create or release) is on its way
    }
    if (this.errorFromPoll) {
      this.clearError();
    }
    this.render(overview);
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  protected onAfterShow(): void {
    void this.poll.refresh();
  }

  private buildDOM(): void {
    const dismiss = button('jp-SandboxPanel-errorDismiss', 'sandbox-error-dismiss', '×');
    dismiss.title = 'Dismiss';
    dismiss.onclick = () => this.clearError();
    this.errorLine.setAttribute('role', 'alert');
    this.errorLine.append(this.errorText, dismiss);
    this.errorLine.hidden = true;

    const create = el('div', 'jp-SandboxPanel-create');
    this.typeSelect.title = 'Sandbox type';
    this.typeSelect.onchange = () => {
      this.typeChosen = true;
    };
    this.newButton.onclick = () => void this.create();
    create.append(this.typeSelect, this.newButton);

    const poolTable = el('table', 'jp-SandboxPanel-pools', 'sandbox-pool-table');
    const head = el('tr', '');
    for (const label of ['Type', 'Warm / target', 'Starting', 'In use']) {
      head.append(el('th', '', undefined, label));
    }
    poolTable.append(el('thead', ''), this.pools);
    poolTable.tHead!.append(head);

    this.runSection.hidden = true;
    const runHeader = el('div', 'jp-SandboxPanel-runHeader');
    const closeRun = button('jp-SandboxPanel-runClose', 'sandbox-run-close', '×');
    closeRun.title = 'Close';
    closeRun.onclick = () => this.setRunTarget(null);
    runHeader.append(el('span', '', undefined, 'Run in '), this.runTarget, closeRun);
    const form = el('form', 'jp-SandboxPanel-runForm');
    this.runInput.placeholder = 'shell command, e.g. ls -la';
    this.runInput.setAttribute('aria-label', 'Shell command');
    const submit = button('jp-mod-accept', 'sandbox-run-submit', 'Run');
    submit.type = 'submit';
    form.append(this.runInput, submit);
    form.onsubmit = event => {
      event.preventDefault();
      void this.runCommand();
    };
    this.runOutput.hidden = true;
    this.runSection.append(runHeader, form, this.runOutput);

    this.node.append(
      el('h2', 'jp-SandboxPanel-heading', undefined, 'Sandboxes'),
      this.errorLine,
      create,
      el('h3', 'jp-SandboxPanel-subheading', undefined, 'Pools'),
      poolTable,
      el('h3', 'jp-SandboxPanel-subheading', undefined, 'In use'),
      this.list,
      this.empty,
      this.runSection
    );
  }

  private render(overview: IOverview): void {
    const types = Object.keys(overview.pools).sort();
    if (types.join() !== this.types.join()) {
      this.fillTypes(types);
    }

    this.pools.replaceChildren(
      ...types.map(type => {
        const pool = overview.pools[type];
        const row = el('tr', 'jp-SandboxPanel-pool', 'sandbox-pool');
        row.dataset.poolType = type;
        row.append(
          el('td', 'jp-SandboxPanel-poolType', undefined, type),
          el('td', '', undefined, `${pool.warm} / ${pool.target}`),
          el('td', '', undefined, String(pool.starting)),
          el('td', '', undefined, String(pool.in_use))
        );
        return row;
      })
    );

    const seen = new Set<string>();
    overview.sandboxes.forEach((sandbox, index) => {
      seen.add(sandbox.id);
      let row = this.rows.get(sandbox.id);
      if (row) {
        row.update(sandbox);
      } else {
        row = new SandboxRow(sandbox, {
          run: r => this.setRunTarget(r.sandbox.id),
          release: r => void this.release(r.sandbox.id),
          desktop: r => this.options.openDesktop(r.sandbox),
          browser: r => this.options.openBrowser(r.sandbox)
        });
        this.rows.set(sandbox.id, row);
      }
      // Keep the server's order (newest first) without moving rows that are in place.
      if (this.list.children[index] !== row.node) {
        this.list.insertBefore(row.node, this.list.children[index] ?? null);
      }
    });
    for (const [id, row] of this.rows) {
      if (!seen.has(id)) {
        row.node.remove();
        this.rows.delete(id);
      }
    }
    this.empty.hidden = this.rows.size > 0;
    if (this.runIdentity !== null && !this.rows.has(this.runIdentity)) {
      this.setRunTarget(null);
    }
  }

  private fillTypes(types: string[]): void {
    const previous = this.typeSelect.value;
    this.types = types;
    this.typeSelect.replaceChildren(
      ...types.map(type => {
        const option = el('option', '', undefined, type);
        option.value = type;
        return option;
      })
    );
    const wanted = this.typeChosen ? previous : this.settings.defaultType;
    if (types.includes(wanted)) {
      this.typeSelect.value = wanted;
    }
    this.newButton.disabled = types.length === 0;
  }

  private async create(): Promise<void> {
    const type = this.typeSelect.value;
    if (!type) {
      return;
    }
    this.newButton.disabled = true;
    this.newButton.textContent = 'Creating…';
    try {
      await createSandbox(type);
      this.clearError();
    } catch (error) {
      this.showError(`Could not create a ${type} sandbox: ${(error as Error).message}`);
    } finally {
      this.newButton.disabled = false;
      this.newButton.textContent = 'New sandbox';
    }
    await this.poll.refresh();
  }

  private async release(identity: string): Promise<void> {
    const answer = await showDialog({
      title: 'Release sandbox?',
      body: `Sandbox ${identity} and everything in it will be destroyed.`,
      buttons: [Dialog.cancelButton(), Dialog.warnButton({ label: 'Release' })]
    });
    if (!answer.button.accept) {
      return;
    }
    try {
      await releaseSandbox(identity);
      this.clearError();
    } catch (error) {
      this.showError(`Could not release ${shortId(identity)}: ${(error as Error).message}`);
    }
    await this.poll.refresh();
  }

  private setRunTarget(identity: string | null): void {
    this.runIdentity = identity;
    this.runSection.hidden = identity === null;
    this.runOutput.hidden = true;
    this.runOutput.replaceChildren();
    this.runTarget.textContent = identity === null ? '' : shortId(identity);
    this.runTarget.title = identity ?? '';
    if (identity !== null) {
      this.runInput.focus();
    }
  }

  private async runCommand(): Promise<void> {
    const identity = this.runIdentity;
    const command = this.runInput.value.trim();
    if (identity === null || !command) {
      return;
    }
    this.runOutput.hidden = false;
    this.runOutput.classList.remove('jp-mod-error');
    this.runOutput.dataset.status = 'running';
    this.runOutput.replaceChildren(
      el('span', 'jp-SandboxPanel-command', undefined, `$ ${command}\n`)
    );
    try {
      const result = await callTool(identity, 'run_shell_command', { command });
      if (this.runIdentity !== identity) {
        return; // the user moved on to another sandbox meanwhile
      }
      for (const part of textParts(result)) {
        const text = part.description === 'returncode' ? `[exit ${part.text}]` : part.text;
        const node = el('span', `jp-SandboxPanel-${part.description || 'text'}`, undefined, text);
        node.dataset.stream = part.description;
        this.runOutput.append(node, text.endsWith('\n') ? '' : '\n');
      }
      this.runOutput.classList.toggle('jp-mod-error', result.isError);
      this.runOutput.dataset.status = result.isError ? 'error' : 'done';
    } catch (error) {
      this.runOutput.classList.add('jp-mod-error');
      this.runOutput.dataset.status = 'error';
      this.runOutput.append(
        el('span', 'jp-SandboxPanel-stderr', undefined, (error as Error).message)
      );
      this.showError(`Could not run the command: ${(error as Error).message}`);
    }
  }

  private showError(message: string, fromPoll = false): void {
    this.errorText.textContent = message;
    this.errorLine.hidden = false;
    this.errorFromPoll = fromPoll;
  }

  private clearError(): void {
    this.errorText.textContent = '';
    this.errorLine.hidden = true;
    this.errorFromPoll = false;
  }
}
