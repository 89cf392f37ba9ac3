/**
 * One SCSI command as the host's storvsp hands it to the SCSI target, and its
 * result. The target never throws or rejects: every failure is a SAM status
 * with sense data.
 */
import type { DataDirection } from '../codes.ts';

export type { DataDirection };

export interface ScsiCommand {
  /** Exactly the CDB bytes (normally 6..16). */
  readonly cdb: Uint8Array;
  /** As the initiator declared it. */
  readonly direction: DataDirection;
  /**
   * The initiator's data buffer as a scatter/gather list of views (guest
   * memory); total length = the transfer length the initiator allocated.
   */
  readonly buffers: readonly Uint8Array[];
}

export interface ScsiResult {
  /** SAM status: GOOD 0x00, CHECK CONDITION 0x02, BUSY 0x08, ... */
  readonly status: number;
  /** Fixed-format sense data (18 bytes) when CHECK CONDITION. */
  readonly sense?: Uint8Array;
  /**
   * Bytes moved to/from the buffers that the initiator may rely on. A
   * command that ends in CHECK CONDITION reports 0, even if a backend moved
   * part of the data before failing (a vectored backend may complete pieces
   * out of order, so a partial count would not be trustworthy).
   */
  readonly transferred: number;
}
