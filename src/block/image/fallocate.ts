import { createRequire } from 'node:module';

/**
 * The one door to native/ (the N-API addon built by `npm ci` through
 * node-gyp): fallocate(2), which Node's fs cannot do. Every function runs the
 * system call on the libuv thread pool and reports whether the filesystem
 * did it: `false` means "not possible here" (no addon, or the filesystem
 * answers EOPNOTSUPP/ENOSYS), so the caller falls back to writing zeros.
 * Other failures (EIO, ENOSPC, EBADF) reject with the system error.
 */
interface NativeAddon {
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  readonly ALLOCATE: number;
  readonly KEEP_SIZE: number;
  readonly PUNCH_HOLE: number;
  readonly ZERO_RANGE: number;
}

function loadAddon(): { addon: NativeAddon | null; error: string | null } {
  try {
    const require = createRequire(import.meta.url);
    return {
      addon: require('../../../native/build/Release/hvkit_native.node') as NativeAddon,
      error: null,
    };
  } catch (error) {
    return { addon: null, error: error instanceof Error ? error.message : String(error) };
  }
}

const loaded = loadAddon();

/** Why the native addon could not be loaded, or null when it is loaded. */
export const nativeAddonError: string | null = loaded.error;

function unsupported(error: unknown): boolean {
  const code = (error as { code?: unknown }).code;
  return code === 'EOPNOTSUPP' || code === 'ENOSYS' || code === 'ENOTSUP';
}

async function call(fd: number, mode: number, offset: number, length: number): Promise<boolean> {
  if (!loaded.addon) return false;
  if (length === 0) return true;
  try {
    await loaded.addon.fallocate(fd, mode, offset, length);
    return true;
  } catch (error) {
    if (unsupported(error)) return false;
    throw error;
  }
}

/** Deallocates [offset, offset+length) without changing the file size; reads then return zeros. */
export function punchHole(fd: number, offset: number, length: number): Promise<boolean> {
  const a = loaded.addon;
  return a ? call(fd, a.PUNCH_HOLE | a.KEEP_SIZE, offset, length) : Promise.resolve(false);
}

/** Turns [offset, offset+length) into allocated, zero-reading extents without writing them. */
export function zeroRange(fd: number, offset: number, length: number): Promise<boolean> {
  const a = loaded.addon;
  return a ? call(fd, a.ZERO_RANGE | a.KEEP_SIZE, offset, length) : Promise.resolve(false);
}

/** Reserves disk space for [offset, offset+length), growing the file if needed. */
export function preallocate(fd: number, offset: number, length: number): Promise<boolean> {
  const a = loaded.addon;
  return a ? call(fd, a.ALLOCATE, offset, length) : Promise.resolve(false);
}
