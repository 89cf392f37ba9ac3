import { defineStruct, guid, u16, u32 } from '../../../wire/index.ts';
import { ImageFormatError } from '../../block-device.ts';
import { PARENT_LOCATOR_TYPE_VHDX } from './format.ts';

/** [MS-VHDX] 2.6.2.6: the parent locator item starts with this header. */
export const vhdxParentLocatorHeader = defineStruct('vhdx_parent_locator_header', {
  locatorType: guid,
  reserved: u16,
  keyValueCount: u16,
});

/** [MS-VHDX] 2.6.2.6.1: one key/value pair; offsets count from the start of the item. */
export const vhdxParentLocatorEntry = defineStruct('vhdx_parent_locator_entry', {
  keyOffset: u32,
  valueOffset: u32,
  keyLength: u16,
  valueLength: u16,
});

/**
 * The VHDX parent locator (2.6.2.6.2): UTF-16LE keys and values.
 * parent_linkage is the parent's DataWriteGuid as "{GUID}"; the paths are
 * tried relative_path first, then volume_path and absolute_win32_path.
 */
export interface ParentLocator {
  readonly locatorType: string;
  readonly entries: ReadonlyMap<string, string>;
}

const STRUCTURE = 'VHDX parent locator';
const utf16 = new TextDecoder('utf-16le', { fatal: true });

function decodeUtf16(item: Uint8Array, offset: number, length: number, what: string): string {
  if (length === 0 || length % 2 !== 0) {
    throw new ImageFormatError(STRUCTURE, `${what} length ${length} is not a positive even number`);
  }
  if (offset + length > item.length) {
    throw new ImageFormatError(
      STRUCTURE,
      `${what} at ${offset}+${length} is past the end of the ${item.length}-byte item`,
    );
  }
  try {
    return utf16.decode(item.subarray(offset, offset + length));
  } catch {
    throw new ImageFormatError(STRUCTURE, `${what} at ${offset} is not valid UTF-16`);
  }
}

export function parseParentLocator(item: Uint8Array): ParentLocator {
  const head = vhdxParentLocatorHeader.tryRead(item);
  if (!head.ok) throw new ImageFormatError(STRUCTURE, head.error);
  const { locatorType, keyValueCount } = head.value;
  const tableEnd = vhdxParentLocatorHeader.size + keyValueCount * vhdxParentLocatorEntry.size;
  if (tableEnd > item.length) {
    throw new ImageFormatError(
      STRUCTURE,
      `${keyValueCount} entries need ${tableEnd} bytes, the item has ${item.length}`,
    );
  }
  const entries = new Map<string, string>();
  for (let i = 0; i < keyValueCount; i++) {
    const e = vhdxParentLocatorEntry.read(
      item,
      vhdxParentLocatorHeader.size + i * vhdxParentLocatorEntry.size,
    );
    const key = decodeUtf16(item, e.keyOffset, e.keyLength, `key ${i}`);
    const value = decodeUtf16(item, e.valueOffset, e.valueLength, `value of ${key}`);
    if (entries.has(key)) throw new ImageFormatError(STRUCTURE, `key ${key} appears twice`);
    entries.set(key, value);
  }
  return { locatorType, entries };
}

export function encodeParentLocator(entries: ReadonlyMap<string, string>): Uint8Array {
  const pairs = [...entries];
  let at = vhdxParentLocatorHeader.size + pairs.length * vhdxParentLocatorEntry.size;
  const strings: { key: Uint8Array; value: Uint8Array }[] = pairs.map(([k, v]) => ({
    key: encodeUtf16(k),
    value: encodeUtf16(v),
  }));
  const total = strings.reduce((n, s) => n + s.key.length + s.value.length, at);
  const out = new Uint8Array(total);
  vhdxParentLocatorHeader.writeInto(out, 0, {
    locatorType: PARENT_LOCATOR_TYPE_VHDX,
    reserved: 0,
    keyValueCount: pairs.length,
  });
  strings.forEach((s, i) => {
    vhdxParentLocatorEntry.writeInto(
      out,
      vhdxParentLocatorHeader.size + i * vhdxParentLocatorEntry.size,
      {
        keyOffset: at,
        valueOffset: at + s.key.length,
        keyLength: s.key.length,
        valueLength: s.value.length,
      },
    );
    out.set(s.key, at);
    out.set(s.value, at + s.key.length);
    at += s.key.length + s.value.length;
  });
  return out;
}

function encodeUtf16(text: string): Uint8Array {
  if (text.length === 0 || text.length > 0x7fff) {
    throw new ImageFormatError(STRUCTURE, `string of ${text.length} characters cannot be stored`);
  }
  const out = new Uint8Array(text.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < text.length; i++) view.setUint16(2 * i, text.charCodeAt(i), true);
  return out;
}

/** Formats a GUID as the parent_linkage value: braces, upper case, as Windows writes it. */
export function linkageValue(guidText: string): string {
  return `{${guidText.toUpperCase()}}`;
}

/** Reads a parent_linkage value ("{GUID}", braces optional, any case) as a canonical GUID. */
export function parseLinkage(value: string): string | null {
  const m =
    /^\{?([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})\}?$/.exec(
      value.trim(),
    );
  return m ? m[1]!.toLowerCase() : null;
}
