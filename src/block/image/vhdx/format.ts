/**
 * Constants of the VHDX format ([MS-VHDX] 2.1-2.6): the fixed layout of the
 * header section, signatures (little-endian ASCII), known region and
 * metadata item GUIDs, and limits.
 */

export const KiB = 1024;
export const MiB = 1024 * 1024;

/** The header section: file identifier, two headers, two region tables (2.2). */
export const FILE_IDENTIFIER_OFFSET = 0;
export const HEADER_OFFSETS = [64 * KiB, 128 * KiB] as const;
export const HEADER_SIZE = 4 * KiB;
export const REGION_TABLE_OFFSETS = [192 * KiB, 256 * KiB] as const;
export const REGION_TABLE_SIZE = 64 * KiB;
export const HEADER_SECTION_SIZE = MiB;

export const FILE_SIGNATURE = 'vhdxfile';
/** "head", "regi", "loge", "desc", "zero", "data" as little-endian u32. */
export const HEADER_SIGNATURE = 0x64616568;
export const REGION_TABLE_SIGNATURE = 0x69676572;
export const LOG_ENTRY_SIGNATURE = 0x65676f6c;
export const DATA_DESCRIPTOR_SIGNATURE = 0x63736564;
export const ZERO_DESCRIPTOR_SIGNATURE = 0x6f72657a;
export const DATA_SECTOR_SIGNATURE = 0x61746164;
/** "metadata" as ASCII. */
export const METADATA_SIGNATURE = 'metadata';

export const REGION_BAT = '2dc27766-f623-4200-9d64-115e9bfd4a08';
export const REGION_METADATA = '8b7ca206-4790-4b9a-b8fe-575f050f886e';

export const ITEM_FILE_PARAMETERS = 'caa16737-fa36-4d43-b3b6-33f0aa44e76b';
export const ITEM_VIRTUAL_DISK_SIZE = '2fa54224-cd1b-4876-b211-5dbed83bf4b8';
export const ITEM_PAGE83_DATA = 'beca12ab-b2e6-4523-93ef-c309e000c746';
export const ITEM_LOGICAL_SECTOR_SIZE = '8141bf1d-a96f-4709-ba47-f233a8faab5f';
export const ITEM_PHYSICAL_SECTOR_SIZE = 'cda348c7-445d-4471-9cc9-e9885251c556';
export const ITEM_PARENT_LOCATOR = 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c';
/** Locator type of a VHDX parent (2.6.2.6). */
export const PARENT_LOCATOR_TYPE_VHDX = 'b04aefb7-d19e-4a81-b789-25b8e9445913';

export const MAX_TABLE_ENTRIES = 2047;
export const METADATA_TABLE_SIZE = 64 * KiB;
export const MAX_METADATA_ITEM_SIZE = MiB;
export const MIN_BLOCK_SIZE = MiB;
export const MAX_BLOCK_SIZE = 256 * MiB;
export const MAX_VIRTUAL_DISK_SIZE = 64 * 1024 * 1024 * MiB;
/** Sectors described by one 1 MiB sector bitmap block (2^23 bits). */
export const SECTORS_PER_BITMAP_BLOCK = 1 << 23;
export const SECTOR_BITMAP_BLOCK_SIZE = MiB;
export const LOG_SECTOR_SIZE = 4 * KiB;

/** Payload block states (2.5.1.1). UNMAPPED was 5 in the 0.95 draft; qemu still writes it. */
export const PAYLOAD_BLOCK_NOT_PRESENT = 0;
export const PAYLOAD_BLOCK_UNDEFINED = 1;
export const PAYLOAD_BLOCK_ZERO = 2;
export const PAYLOAD_BLOCK_UNMAPPED = 3;
export const PAYLOAD_BLOCK_UNMAPPED_V095 = 5;
export const PAYLOAD_BLOCK_FULLY_PRESENT = 6;
export const PAYLOAD_BLOCK_PARTIALLY_PRESENT = 7;
/** Sector bitmap block states (2.5.1.2). */
export const SB_BLOCK_NOT_PRESENT = 0;
export const SB_BLOCK_PRESENT = 6;

export function payloadStateName(state: number): string {
  switch (state) {
    case PAYLOAD_BLOCK_NOT_PRESENT:
      return 'not present';
    case PAYLOAD_BLOCK_UNDEFINED:
      return 'undefined';
    case PAYLOAD_BLOCK_ZERO:
      return 'zero';
    case PAYLOAD_BLOCK_UNMAPPED:
    case PAYLOAD_BLOCK_UNMAPPED_V095:
      return 'unmapped';
    case PAYLOAD_BLOCK_FULLY_PRESENT:
      return 'fully present';
    case PAYLOAD_BLOCK_PARTIALLY_PRESENT:
      return 'partially present';
    default:
      return `invalid (${state})`;
  }
}
