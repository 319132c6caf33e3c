import { ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget } from '@jupyterlab/apputils';
import { ISettingRegistry } from '@jupyterlab/settingregistry';
import { Widget } from '@lumino/widgets';

import { ISandbox } from './api';
import { sandboxIcon } from './icon';
import { IPanelSettings, SandboxPanel } from './panel';
import { createBrowserWidget, createDesktopWidget } from './viewers';

const PLUGIN_ID = 'jupyter-sandbox:plugin';
const PANEL_ID = 'jupyter-sandbox-panel';

namespace CommandIDs {
  export const openPanel = 'jupyter-sandbox:open-panel';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'A sidebar panel for jupyter-sandbox: pools, sandboxes, desktops and browsers.',
  autoStart: true,
  optional: [ISettingRegistry, ICommandPalette, ILayoutRestorer],
  activate: (
    app: JupyterFrontEnd,
    settingRegistry: ISettingRegistry | null,
    palette: ICommandPalette | null,
    restorer: ILayoutRestorer | null
  ) => {
    // One main-area view per sandbox and kind: opening it again activates the open one.
    const views = new Map<string, MainAreaWidget<Widget>>();
    const openView = (sandbox: ISandbox, make: (s: ISandbox) => MainAreaWidget<Widget>) => {
      const fresh = make(sandbox);
      const existing = views.get(fresh.id);
      if (existing && !existing.isDisposed) {
        fresh.dispose();
        app.shell.activateById(existing.id);
        return;
      }
      views.set(fresh.id, fresh);
      fresh.disposed.connect(() => views.delete(fresh.id));
      app.shell.add(fresh, 'main');
      app.shell.activateById(fresh.id);
    };

    const panel = new SandboxPanel({
      openDesktop: sandbox => openView(sandbox, createDesktopWidget),
      openBrowser: sandbox => openView(sandbox, createBrowserWidget)
    });
    panel.id = PANEL_ID;
    panel.title.icon = sandboxIcon;
    panel.title.caption = 'Sandboxes';
    app.shell.add(panel, 'left', { rank: 850 });
    restorer?.add(panel, PANEL_ID);

    app.commands.addCommand(CommandIDs.openPanel, {
      label: 'Show Sandboxes Panel',
      execute: () => app.shell.activateById(PANEL_ID)
    });
    palette?.addItem({ command: CommandIDs.openPanel, category: 'Sandboxes' });

    if (settingRegistry) {
      const apply = (settings: ISettingRegistry.ISettings) => {
        panel.configure(settings.composite as unknown as IPanelSettings);
      };
      settingRegistry
        .load(PLUGIN_ID)
        .then(settings => {
          apply(settings);
          settings.changed.connect(apply);
        })
        .catch(reason => {
          console.error('jupyter-sandbox: could not load settings', reason);
        });
    }
  }
};

export default plugin;
