/**
 * Typed calls to the jupyter-sandbox server extension (routes under `{baseUrl}sandbox/`).
 *
 * Requests go through `ServerConnection.makeRequest`, so Jupyter's auth (token or cookie)
 * and XSRF header are sent as for any other Jupyter API.
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';

export interface IPool {
  warm: number;
  target: number;
  starting: number;
  in_use: number;
}

export type SandboxState = 'warm' | 'running' | 'recycled' | 'error';

export interface ISandbox {
  id: string;
  type: string;
  state: SandboxState;
  session: string | null;
  /** Unix seconds. */
  created: number;
  /** Unix seconds. */
  last_active: number | null;
  /** Whether the sandbox serves a virtual desktop (gui types). */
  desktop: boolean;
}

export interface IOverview {
  pools: Record<string, IPool>;
  sandboxes: ISandbox[];
}

export interface IContent {
  type: 'text' | 'image' | string;
  text?: string;
  data?: string;
  mimeType?: string;
  description?: string;
}

export interface IToolResult {
  content: IContent[];
  isError: boolean;
}

/** An HTTP failure, with the server's `detail` when it sent one. */
export class SandboxAPIError extends Error {
  constructor(
    message: string,
    readonly status: number
  ) {
    super(message);
  }
}

const settings = ServerConnection.makeSettings();

/** The full URL of a route under `sandbox/`. */
export function sandboxUrl(...parts: string[]): string {
  return URLExt.join(settings.baseUrl, 'sandbox', ...parts);
}

async function request<T>(path: string, init: RequestInit = {}): Promise<T> {
  let response: Response;
  try {
    response = await ServerConnection.makeRequest(sandboxUrl(path), init, settings);
  } catch (error) {
    throw new SandboxAPIError(`network error: ${error}`, 0);
  }
  const text = await response.text();
  let body: any = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    // not JSON: reported below with the status
  }
  if (!response.ok) {
    const detail = body?.detail ?? body?.message ?? (text.slice(0, 200) || response.statusText);
    throw new SandboxAPIError(`${response.status}: ${detail}`, response.status);
  }
  return body as T;
}

/** `POST sandbox/<route>` with a JSON body; resolves to the answer's `data`. */
async function rpc<T>(route: string, body: Record<string, unknown>): Promise<T> {
  const answer = await request<{ data: T }>(route, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { 'Content-Type': 'application/json' }
  });
  return answer.data;
}

export function getOverview(): Promise<IOverview> {
  return request<IOverview>('api/sandboxes');
}

export function createSandbox(sandboxType: string): Promise<string> {
  return rpc<string>('create', { sandbox_type: sandboxType });
}

export function releaseSandbox(identity: string): Promise<boolean> {
  return rpc<boolean>('release', { identity });
}

export function callTool(
  identity: string,
  toolName: string,
  args: Record<string, unknown>
): Promise<IToolResult> {
  return rpc<IToolResult>('call_tool', {
    identity,
    tool_name: toolName,
    arguments: args
  });
}

/** The noVNC page of a gui sandbox (Jupyter's cookie authenticates it). */
export function desktopUrl(identity: string): string {
  return sandboxUrl('desktop', encodeURIComponent(identity), 'vnc', 'vnc_relay.html');
}

/** The text of a tool result's items, by description (`stdout`, `stderr`, ...). */
export function textParts(result: IToolResult): { description: string; text: string }[] {
  return result.content
    .filter(item => item.type === 'text')
    .map(item => ({ description: item.description ?? '', text: item.text ?? '' }));
}
