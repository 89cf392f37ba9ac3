/**
 * Every device kind a VM config can use. A new kind is one module under
 * src/vm/devices/ and one line here.
 */
import type { DeviceKind } from './device-kind.ts';
import { echoKind } from './devices/echo.ts';
import { icKind } from './devices/ic.ts';
import { nicKind } from './devices/nic.ts';
import { scsiKind } from './devices/scsi.ts';

// biome-ignore lint/suspicious/noExplicitAny: kinds have different config types
export const deviceKinds: readonly DeviceKind<any, any>[] = [echoKind, scsiKind, nicKind, icKind];

// biome-ignore lint/suspicious/noExplicitAny: see above
export function deviceKind(type: string): DeviceKind<any, any> | undefined {
  return deviceKinds.find((k) => k.type === type);
}
