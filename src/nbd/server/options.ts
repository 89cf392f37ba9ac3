import { InfoType, NBD_MAX_STRING, nameOf, Option, OptionReply } from '../protocol.ts';
import { type NbdExport, transmissionFlags } from './export.ts';
import {
  exportNameReply,
  infoBlockSize,
  infoExport,
  infoString,
  optionError,
  optionReply,
  serverEntry,
} from './replies.ts';

/**
 * Option haggling on the server (proto.md "Fixed newstyle negotiation" and
 * "Option types"): one pure function per option, each returning the replies
 * to send and what happens next. No I/O here, so every case is testable from
 * bytes alone.
 */

export interface ExportTable {
  /** The export for `name`; '' selects the default export. */
  lookup(name: string): NbdExport | undefined;
  list(): readonly NbdExport[];
}

export interface HaggleState {
  structuredReplies: boolean;
  /** The client set NBD_FLAG_C_NO_ZEROES. */
  readonly noZeroes: boolean;
}

export type OptionOutcome =
  | { readonly next: 'continue'; readonly replies: readonly Uint8Array[] }
  | {
      readonly next: 'transmission';
      readonly replies: readonly Uint8Array[];
      readonly export: NbdExport;
    }
  | { readonly next: 'close'; readonly replies: readonly Uint8Array[]; readonly reason: string };

/** Option data above this is skipped unread and refused (no valid option comes close). */
export const MAX_OPTION_DATA = 3 * NBD_MAX_STRING;

const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

function decodeName(bytes: Uint8Array): string | undefined {
  if (bytes.length > NBD_MAX_STRING || bytes.includes(0)) return undefined;
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

const proceed = (...replies: Uint8Array[]): OptionOutcome => ({ next: 'continue', replies });

function invalid(option: number, message: string): OptionOutcome {
  return proceed(optionError(option, OptionReply.ErrInvalid, message));
}

/** Handles one complete option (`data` holds all of its bytes). */
export function handleOption(
  option: number,
  data: Uint8Array,
  state: HaggleState,
  exports: ExportTable,
): OptionOutcome {
  switch (option) {
    case Option.ExportName:
      return exportName(data, state, exports);
    case Option.Abort:
      // The client may hang up without reading this; the spec still wants an ACK.
      return { next: 'close', replies: [optionReply(option, OptionReply.Ack)], reason: 'abort' };
    case Option.List:
      if (data.length !== 0) return invalid(option, 'NBD_OPT_LIST takes no data');
      return proceed(
        ...exports.list().map((e) => serverEntry(option, e.name, e.description)),
        optionReply(option, OptionReply.Ack),
      );
    case Option.StructuredReply:
      if (data.length !== 0) return invalid(option, 'NBD_OPT_STRUCTURED_REPLY takes no data');
      state.structuredReplies = true;
      return proceed(optionReply(option, OptionReply.Ack));
    case Option.Info:
    case Option.Go:
      return infoOrGo(option, data, state, exports);
    case Option.StartTls:
      return proceed(optionError(option, OptionReply.ErrUnsup, 'TLS is not supported'));
    default:
      return proceed(
        optionError(
          option,
          OptionReply.ErrUnsup,
          `option ${nameOf(Option, option)} is not supported`,
        ),
      );
  }
}

/** Option data was longer than MAX_OPTION_DATA and has been skipped. */
export function optionTooLarge(option: number, length: number): OptionOutcome {
  const message = `option data of ${length} bytes exceeds the limit of ${MAX_OPTION_DATA}`;
  if (option === Option.ExportName) {
    // This option cannot be answered with an error: the session must end.
    return { next: 'close', replies: [], reason: message };
  }
  const known = Object.values(Option).includes(option);
  return proceed(
    optionError(option, known ? OptionReply.ErrTooBig : OptionReply.ErrUnsup, message),
  );
}

function exportName(data: Uint8Array, state: HaggleState, exports: ExportTable): OptionOutcome {
  const name = decodeName(data);
  const exp = name === undefined ? undefined : exports.lookup(name);
  if (!exp) {
    return {
      next: 'close',
      replies: [],
      reason: `NBD_OPT_EXPORT_NAME for unknown export ${JSON.stringify(name ?? '<invalid>')}`,
    };
  }
  const flags = transmissionFlags(exp, state.structuredReplies);
  return {
    next: 'transmission',
    replies: [exportNameReply(exp.device.size, flags, state.noZeroes)],
    export: exp,
  };
}

/**
 * NBD_OPT_INFO / NBD_OPT_GO data: u32 name length, name, u16 count, count x
 * u16 information requests. Every length is checked against the option's.
 */
function infoOrGo(
  option: number,
  data: Uint8Array,
  state: HaggleState,
  exports: ExportTable,
): OptionOutcome {
  const label = option === Option.Go ? 'NBD_OPT_GO' : 'NBD_OPT_INFO';
  if (data.length < 6) return invalid(option, `${label} data of ${data.length} bytes is too short`);
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const nameLength = view.getUint32(0, false);
  if (nameLength > data.length - 6) {
    return invalid(
      option,
      `${label} name length ${nameLength} exceeds the ${data.length}-byte option`,
    );
  }
  const count = view.getUint16(4 + nameLength, false);
  const expected = 6 + nameLength + 2 * count;
  if (expected !== data.length) {
    return invalid(
      option,
      `${label} with ${count} information requests should be ${expected} bytes, got ${data.length}`,
    );
  }
  const name = decodeName(data.subarray(4, 4 + nameLength));
  if (name === undefined) return invalid(option, `${label} export name is not a valid string`);
  const requested = new Set<number>();
  for (let i = 0; i < count; i++) requested.add(view.getUint16(6 + nameLength + 2 * i, false));

  const exp = exports.lookup(name);
  if (!exp) {
    return proceed(
      optionError(option, OptionReply.ErrUnknown, `no export named ${JSON.stringify(name)}`),
    );
  }
  const replies = [
    infoExport(option, exp.device.size, transmissionFlags(exp, state.structuredReplies)),
    // Sent even when not requested: our minimum (the sector size) is stricter
    // than the protocol default of 1, and the spec asks us to say so.
    infoBlockSize(option, exp.minimumBlock, exp.preferredBlock, exp.maximumBlock),
  ];
  if (requested.has(InfoType.Name)) replies.push(infoString(option, InfoType.Name, exp.name));
  if (requested.has(InfoType.Description) && exp.description) {
    replies.push(infoString(option, InfoType.Description, exp.description));
  }
  replies.push(optionReply(option, OptionReply.Ack));
  if (option === Option.Go) return { next: 'transmission', replies, export: exp };
  return proceed(...replies);
}
