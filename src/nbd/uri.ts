import { NBD_DEFAULT_PORT } from './protocol.ts';

/**
 * NBD URIs as the NBD project's doc/uri.md defines them:
 *   nbd://host[:port]/[export]
 *   nbd+unix:///[export]?socket=/path/to/socket
 * The export name is the percent-decoded path without its leading slash;
 * an empty name selects the server's default export. TLS schemes (nbds...)
 * are recognised and refused.
 */

export type NbdAddress =
  | { readonly transport: 'tcp'; readonly host: string; readonly port: number }
  | { readonly transport: 'unix'; readonly socket: string };

export interface NbdTarget {
  readonly address: NbdAddress;
  readonly exportName: string;
}

export class NbdUriError extends Error {
  override readonly name = 'NbdUriError';
}

export function isNbdUri(text: string): boolean {
  return /^nbds?(\+(unix|tcp|vsock))?:\/\//i.test(text);
}

export function parseNbdUri(text: string): NbdTarget {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new NbdUriError(`${JSON.stringify(text)} is not a URI`);
  }
  const scheme = url.protocol.slice(0, -1).toLowerCase();
  let exportName: string;
  try {
    exportName = decodeURIComponent(url.pathname.replace(/^\//, ''));
  } catch {
    throw new NbdUriError(`${JSON.stringify(text)}: export name is not valid percent-encoding`);
  }
  switch (scheme) {
    case 'nbd':
    case 'nbd+tcp': {
      const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
      if (!host) throw new NbdUriError(`${JSON.stringify(text)}: no host`);
      const port = url.port === '' ? NBD_DEFAULT_PORT : Number(url.port);
      if (!Number.isInteger(port) || port < 1 || port > 65535) {
        throw new NbdUriError(`${JSON.stringify(text)}: port ${url.port} is not valid`);
      }
      return { address: { transport: 'tcp', host, port }, exportName };
    }
    case 'nbd+unix': {
      if (url.host !== '') {
        throw new NbdUriError(`${JSON.stringify(text)}: nbd+unix URIs take no host`);
      }
      const socket = url.searchParams.get('socket');
      if (!socket) throw new NbdUriError(`${JSON.stringify(text)}: missing ?socket=PATH`);
      return { address: { transport: 'unix', socket }, exportName };
    }
    case 'nbds':
    case 'nbds+tcp':
    case 'nbds+unix':
      throw new NbdUriError(`${JSON.stringify(text)}: TLS (nbds) is not supported`);
    default:
      throw new NbdUriError(`${JSON.stringify(text)}: scheme ${scheme} is not an NBD transport`);
  }
}

/** The URI for an address and export name (the inverse of parseNbdUri). */
export function formatNbdUri(target: NbdTarget): string {
  const name = target.exportName.split('/').map(encodeURIComponent).join('/');
  const { address } = target;
  if (address.transport === 'unix') {
    return `nbd+unix:///${name}?socket=${encodeURIComponent(address.socket).replaceAll('%2F', '/')}`;
  }
  const host = address.host.includes(':') ? `[${address.host}]` : address.host;
  return `nbd://${host}:${address.port}/${name}`;
}
