/**
 * SCSI wire codes: operation codes, SAM status, sense keys and the additional
 * sense code pairs this target reports. Values from SPC-4 (T10/BSR INCITS 513)
 * and SBC-3 (T10/BSR INCITS 514); the ones Linux uses are also in the oracle
 * (test/fixtures/oracle/linux-hv-facts.json, section "scsi").
 */

/** Operation codes (first CDB byte). */
export const ScsiOp = {
  TEST_UNIT_READY: 0x00,
  REQUEST_SENSE: 0x03,
  READ_6: 0x08,
  WRITE_6: 0x0a,
  INQUIRY: 0x12,
  MODE_SELECT_6: 0x15,
  MODE_SENSE_6: 0x1a,
  START_STOP_UNIT: 0x1b,
  READ_CAPACITY_10: 0x25,
  READ_10: 0x28,
  WRITE_10: 0x2a,
  VERIFY_10: 0x2f,
  SYNCHRONIZE_CACHE_10: 0x35,
  WRITE_SAME_10: 0x41,
  UNMAP: 0x42,
  MODE_SELECT_10: 0x55,
  MODE_SENSE_10: 0x5a,
  READ_16: 0x88,
  WRITE_16: 0x8a,
  VERIFY_16: 0x8f,
  SYNCHRONIZE_CACHE_16: 0x91,
  WRITE_SAME_16: 0x93,
  /** SERVICE ACTION IN(16); service action 0x10 is READ CAPACITY(16). */
  SERVICE_ACTION_IN_16: 0x9e,
  REPORT_LUNS: 0xa0,
  READ_12: 0xa8,
  WRITE_12: 0xaa,
  VERIFY_12: 0xaf,
} as const;
export type ScsiOp = (typeof ScsiOp)[keyof typeof ScsiOp];

/** SERVICE ACTION IN(16) service action for READ CAPACITY(16). */
export const SAI_READ_CAPACITY_16 = 0x10;

/** 'in' = device to initiator (READ), 'out' = initiator to device (WRITE). */
export type DataDirection = 'none' | 'in' | 'out';

/** SAM status codes (SAM-5 5.3). */
export const ScsiStatus = {
  GOOD: 0x00,
  CHECK_CONDITION: 0x02,
  CONDITION_MET: 0x04,
  BUSY: 0x08,
  RESERVATION_CONFLICT: 0x18,
  TASK_SET_FULL: 0x28,
  ACA_ACTIVE: 0x30,
  TASK_ABORTED: 0x40,
} as const;
export type ScsiStatus = (typeof ScsiStatus)[keyof typeof ScsiStatus];

/** Sense keys (SPC-4 4.5.6, table 52). */
export const SenseKey = {
  NO_SENSE: 0x0,
  RECOVERED_ERROR: 0x1,
  NOT_READY: 0x2,
  MEDIUM_ERROR: 0x3,
  HARDWARE_ERROR: 0x4,
  ILLEGAL_REQUEST: 0x5,
  UNIT_ATTENTION: 0x6,
  DATA_PROTECT: 0x7,
  BLANK_CHECK: 0x8,
  VENDOR_SPECIFIC: 0x9,
  COPY_ABORTED: 0xa,
  ABORTED_COMMAND: 0xb,
  VOLUME_OVERFLOW: 0xd,
  MISCOMPARE: 0xe,
  COMPLETED: 0xf,
} as const;
export type SenseKey = (typeof SenseKey)[keyof typeof SenseKey];

/** An additional sense code and its qualifier (SPC-4 4.5.6, table 53). */
export interface AscPair {
  readonly asc: number;
  readonly ascq: number;
}

function pair(asc: number, ascq: number): AscPair {
  return Object.freeze({ asc, ascq });
}

/** The ASC/ASCQ pairs the target reports. */
export const Asc = {
  NO_ADDITIONAL_SENSE: pair(0x00, 0x00),
  /** LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE (backend closed). */
  NOT_READY_CAUSE_NOT_REPORTABLE: pair(0x04, 0x00),
  /** LOGICAL UNIT NOT READY, INITIALIZING COMMAND REQUIRED (stopped by START STOP UNIT). */
  NOT_READY_INITIALIZING_COMMAND_REQUIRED: pair(0x04, 0x02),
  WRITE_ERROR: pair(0x0c, 0x00),
  UNRECOVERED_READ_ERROR: pair(0x11, 0x00),
  PARAMETER_LIST_LENGTH_ERROR: pair(0x1a, 0x00),
  MISCOMPARE_DURING_VERIFY: pair(0x1d, 0x00),
  INVALID_COMMAND_OPERATION_CODE: pair(0x20, 0x00),
  LBA_OUT_OF_RANGE: pair(0x21, 0x00),
  INVALID_FIELD_IN_CDB: pair(0x24, 0x00),
  LOGICAL_UNIT_NOT_SUPPORTED: pair(0x25, 0x00),
  INVALID_FIELD_IN_PARAMETER_LIST: pair(0x26, 0x00),
  WRITE_PROTECTED: pair(0x27, 0x00),
  SPACE_ALLOCATION_FAILED_WRITE_PROTECT: pair(0x27, 0x07),
  POWER_ON_RESET: pair(0x29, 0x00),
  CAPACITY_DATA_HAS_CHANGED: pair(0x2a, 0x09),
  SAVING_PARAMETERS_NOT_SUPPORTED: pair(0x39, 0x00),
  MEDIUM_NOT_PRESENT: pair(0x3a, 0x00),
  REPORTED_LUNS_DATA_HAS_CHANGED: pair(0x3f, 0x0e),
  INTERNAL_TARGET_FAILURE: pair(0x44, 0x00),
} as const;

/** Peripheral device type of a direct-access block device (SPC-4 table 141). */
export const DEVICE_TYPE_DISK = 0x00;
/** Peripheral qualifier 3 + device type 0x1f: no logical unit at this LUN. */
export const PERIPHERAL_NO_LUN = 0x7f;

/** VPD page codes (SPC-4 7.8, SBC-3 6.5). */
export const VpdPage = {
  SUPPORTED_PAGES: 0x00,
  UNIT_SERIAL_NUMBER: 0x80,
  DEVICE_IDENTIFICATION: 0x83,
  BLOCK_LIMITS: 0xb0,
  BLOCK_DEVICE_CHARACTERISTICS: 0xb1,
  LOGICAL_BLOCK_PROVISIONING: 0xb2,
} as const;

/** Mode page codes (SBC-3 6.4, SPC-4 7.5). */
export const ModePage = {
  CACHING: 0x08,
  CONTROL: 0x0a,
  ALL: 0x3f,
} as const;

/** MODE SENSE page control field (SPC-4 6.11.1, table 162). */
export const PageControl = {
  CURRENT: 0,
  CHANGEABLE: 1,
  DEFAULT: 2,
  SAVED: 3,
} as const;
export type PageControl = (typeof PageControl)[keyof typeof PageControl];
