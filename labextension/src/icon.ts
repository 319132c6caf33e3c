import { LabIcon } from '@jupyterlab/ui-components';

import sandboxSvgstr from '../style/icons/sandbox.svg';

export const sandboxIcon = new LabIcon({
  name: 'jupyter-sandbox:sandbox',
  svgstr: sandboxSvgstr
});
