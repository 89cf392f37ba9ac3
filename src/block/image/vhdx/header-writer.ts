import type { ImageFile } from '../image-file.ts';
import { HEADER_OFFSETS } from './format.ts';
import { type CurrentHeader, encodeHeader, type VhdxHeader } from './header.ts';

export type HeaderChanges = Partial<
  Pick<VhdxHeader, 'fileWriteGuid' | 'dataWriteGuid' | 'logGuid'>
>;

/**
 * Header updates as [MS-VHDX] 2.2.2.1 prescribes: the new header goes to the
 * slot that is not current, with the sequence number one higher, and is
 * flushed before anything relies on it; so the two slots alternate and a
 * torn update leaves the previous header in force. Updates run one at a time.
 */
export class HeaderWriter {
  private chain: Promise<void> = Promise.resolve();

  constructor(
    private readonly file: ImageFile,
    private current: CurrentHeader,
  ) {}

  get header(): VhdxHeader {
    return this.current.header;
  }

  get slot(): 0 | 1 {
    return this.current.slot;
  }

  update(changes: HeaderChanges): Promise<void> {
    const run = this.chain.then(async () => {
      const slot: 0 | 1 = this.current.slot === 0 ? 1 : 0;
      const next: VhdxHeader = {
        ...this.current.header,
        ...changes,
        sequenceNumber: this.current.header.sequenceNumber + 1n,
      };
      await this.file.write(HEADER_OFFSETS[slot], encodeHeader(next));
      await this.file.sync();
      this.current = { header: next, slot };
    });
    this.chain = run.catch(() => undefined);
    return run;
  }
}
