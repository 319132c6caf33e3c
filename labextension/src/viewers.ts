/**
 * Main-area views of one sandbox: its virtual desktop (an iframe on noVNC) and its
 * headless browser (screenshots refreshed while visible, an address bar to navigate).
 */
import { MainAreaWidget } from '@jupyterlab/apputils';
import { IFrame } from '@jupyterlab/ui-components';
import { Poll } from '@lumino/polling';
import { Widget } from '@lumino/widgets';

import { ISandbox, callTool, desktopUrl, textParts } from './api';
import { sandboxIcon } from './icon';
import { shortId } from './panel';

/** Seconds between screenshots of a visible browser view. */
const SCREENSHOT_INTERVAL = 2;

function titled<T extends Widget>(widget: MainAreaWidget<T>, id: string, label: string): void {
  widget.id = id;
  widget.title.label = label;
  widget.title.icon = sandboxIcon;
  widget.title.closable = true;
}

/** The noVNC page of a gui sandbox; Jupyter's cookie authenticates it and its websocket. */
export function createDesktopWidget(sandbox: ISandbox): MainAreaWidget<IFrame> {
  const frame = new IFrame({
    sandbox: ['allow-scripts', 'allow-same-origin'],
    referrerPolicy: 'same-origin'
  });
  frame.addClass('jp-SandboxDesktop');
  frame.node.dataset.testid = 'sandbox-desktop';
  frame.url = desktopUrl(sandbox.id);
  const widget = new MainAreaWidget({ content: frame });
  titled(widget, `jupyter-sandbox-desktop-${sandbox.id}`, `Desktop ${shortId(sandbox.id)}`);
  return widget;
}

/** Screenshots of a browser sandbox, refreshed while the view is visible. */
export class BrowserView extends Widget {
  private readonly address = document.createElement('input');
  private readonly image = document.createElement('img');
  private readonly error = document.createElement('div');
  private readonly poll: Poll;

  constructor(readonly identity: string) {
    super();
    this.addClass('jp-SandboxBrowser');
    this.node.dataset.testid = 'sandbox-browser';

    const form = document.createElement('form');
    form.className = 'jp-SandboxBrowser-bar';
    this.address.className = 'jp-mod-styled jp-SandboxBrowser-address';
    this.address.dataset.testid = 'sandbox-browser-address';
    this.address.placeholder = 'https://example.org';
    this.address.setAttribute('aria-label', 'Address');
    const go = document.createElement('button');
    go.type = 'submit';
    go.className = 'jp-Button jp-mod-styled jp-mod-accept';
    go.dataset.testid = 'sandbox-browser-go';
    go.textContent = 'Go';
    form.append(this.address, go);
    form.onsubmit = event => {
      event.preventDefault();
      void this.navigate(this.address.value.trim());
    };

    this.error.className = 'jp-SandboxPanel-error';
    this.error.dataset.testid = 'sandbox-browser-error';
    this.error.setAttribute('role', 'alert');
    this.error.hidden = true;

    this.image.className = 'jp-SandboxBrowser-screenshot';
    this.image.dataset.testid = 'sandbox-browser-screenshot';
    this.image.alt = `Screenshot of sandbox ${identity}`;
    const viewport = document.createElement('div');
    viewport.className = 'jp-SandboxBrowser-viewport';
    viewport.append(this.image);

    this.node.append(form, this.error, viewport);
    this.poll = new Poll({
      factory: () => this.capture(),
      frequency: { interval: SCREENSHOT_INTERVAL * 1000, backoff: false },
      name: `jupyter-sandbox:screenshot:${identity}`,
      standby: () => !this.isVisible || 'when-hidden'
    });
  }

  dispose(): void {
    this.poll.dispose();
    super.dispose();
  }

  protected onAfterShow(): void {
    void this.poll.refresh();
  }

  private async capture(): Promise<void> {
    try {
      const result = await callTool(this.identity, 'browser_take_screenshot', { raw: true });
      const image = result.content.find(item => item.type === 'image' && item.data);
      if (result.isError || !image) {
        const text = textParts(result)
          .map(part => part.text)
          .join(' ');
        throw new Error(text || 'no screenshot in the answer');
      }
      this.image.src = `data:${image.mimeType ?? 'image/png'};base64,${image.data}`;
      this.setError(null);
    } catch (error) {
      this.setError(`Screenshot failed: ${(error as Error).message}`);
    }
  }

  private async navigate(url: string): Promise<void> {
    if (!url) {
      return;
    }
    try {
      const result = await callTool(this.identity, 'browser_navigate', { url });
      if (result.isError) {
        throw new Error(
          textParts(result)
            .map(part => part.text)
            .join(' ') || 'navigation failed'
        );
      }
      this.setError(null);
    } catch (error) {
      this.setError(`Could not open ${url}: ${(error as Error).message}`);
    }
    await this.poll.refresh();
  }

  private setError(message: string | null): void {
    this.error.textContent = message ?? '';
    this.error.hidden = message === null;
  }
}

export function createBrowserWidget(sandbox: ISandbox): MainAreaWidget<BrowserView> {
  const widget = new MainAreaWidget({ content: new BrowserView(sandbox.id) });
  titled(widget, `jupyter-sandbox-browser-${sandbox.id}`, `Browser ${shortId(sandbox.id)}`);
  return widget;
}
