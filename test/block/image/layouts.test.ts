import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  vhdDynamicHeader,
  vhdFooter,
  vhdParentLocatorEntry,
} from '../../../src/block/image/vhd/footer.ts';
import { chsGeometry } from '../../../src/block/image/vhd/geometry.ts';
import { vhdxFileIdentifier, vhdxHeader } from '../../../src/block/image/vhdx/header.ts';
import {
  vhdxLogDataDescriptor,
  vhdxLogDataSector,
  vhdxLogEntryHeader,
  vhdxLogZeroDescriptor,
} from '../../../src/block/image/vhdx/log.ts';
import {
  vhdxFileParameters,
  vhdxMetadataTableEntry,
  vhdxMetadataTableHeader,
} from '../../../src/block/image/vhdx/metadata.ts';
import {
  vhdxParentLocatorEntry,
  vhdxParentLocatorHeader,
} from '../../../src/block/image/vhdx/parent-locator.ts';
import {
  vhdxRegionTableEntry,
  vhdxRegionTableHeader,
} from '../../../src/block/image/vhdx/region-table.ts';

/** Sizes and offsets from [MS-VHDX] sections 2.2-2.6 and the VHD specification. */
const table: [
  string,
  { size: number; offsetOf(path: string): number },
  number,
  Record<string, number>,
][] = [
  ['vhdx_file_identifier', vhdxFileIdentifier, 520, { creator: 8 }],
  [
    'vhdx_header',
    vhdxHeader,
    4096,
    { sequenceNumber: 8, logGuid: 48, logVersion: 64, version: 66, logLength: 68, logOffset: 72 },
  ],
  ['vhdx_region_table_header', vhdxRegionTableHeader, 16, { entryCount: 8 }],
  ['vhdx_region_table_entry', vhdxRegionTableEntry, 32, { fileOffset: 16, length: 24, flags: 28 }],
  ['vhdx_metadata_table_header', vhdxMetadataTableHeader, 32, { entryCount: 10 }],
  ['vhdx_metadata_table_entry', vhdxMetadataTableEntry, 32, { offset: 16, length: 20, flags: 24 }],
  ['vhdx_file_parameters', vhdxFileParameters, 8, { flags: 4 }],
  ['vhdx_parent_locator_header', vhdxParentLocatorHeader, 20, { keyValueCount: 18 }],
  [
    'vhdx_parent_locator_entry',
    vhdxParentLocatorEntry,
    12,
    { valueOffset: 4, keyLength: 8, valueLength: 10 },
  ],
  [
    'vhdx_log_entry_header',
    vhdxLogEntryHeader,
    64,
    { tail: 12, sequenceNumber: 16, logGuid: 32, lastFileOffset: 56 },
  ],
  [
    'vhdx_log_zero_descriptor',
    vhdxLogZeroDescriptor,
    32,
    { zeroLength: 8, fileOffset: 16, sequenceNumber: 24 },
  ],
  [
    'vhdx_log_data_descriptor',
    vhdxLogDataDescriptor,
    32,
    { trailingBytes: 4, leadingBytes: 8, fileOffset: 16 },
  ],
  ['vhdx_log_data_sector', vhdxLogDataSector, 4096, { data: 8, sequenceLow: 4092 }],
  [
    'vhd_footer',
    vhdFooter,
    512,
    {
      dataOffset: 16,
      currentSize: 48,
      cylinders: 56,
      diskType: 60,
      checksum: 64,
      uniqueId: 68,
      savedState: 84,
    },
  ],
  [
    'vhd_dynamic_header',
    vhdDynamicHeader,
    1024,
    {
      tableOffset: 16,
      maxTableEntries: 28,
      blockSize: 32,
      checksum: 36,
      parentUnicodeName: 64,
      parentLocators: 576,
    },
  ],
  ['vhd_parent_locator_entry', vhdParentLocatorEntry, 24, { platformDataOffset: 16 }],
];

for (const [name, type, size, offsets] of table) {
  test(`${name}: ${size} bytes, field offsets as specified`, () => {
    assert.equal(type.size, size);
    for (const [field, offset] of Object.entries(offsets))
      assert.equal(type.offsetOf(field), offset, field);
  });
}

test('VHD CHS geometry follows the specification appendix', () => {
  // 10 MiB: 17 sectors per track, 4 heads.
  assert.deepEqual(chsGeometry(10 * 1024 * 1024), {
    cylinders: 301,
    heads: 4,
    sectorsPerTrack: 17,
  });
  // 127 GiB and beyond: 255 sectors per track, 16 heads.
  assert.deepEqual(chsGeometry(2040 * 1024 ** 3), {
    cylinders: 65535,
    heads: 16,
    sectorsPerTrack: 255,
  });
  // The product never exceeds the disk's sectors.
  for (const mib of [1, 3, 64, 500, 4096, 40000]) {
    const g = chsGeometry(mib * 1024 * 1024);
    assert.ok(g.cylinders * g.heads * g.sectorsPerTrack <= (mib * 1024 * 1024) / 512, `${mib} MiB`);
  }
});
