export { WireError } from './errors.ts';
export { guidToBytes, isGuid, NULL_GUID, randomGuid, readGuid, writeGuid } from './guid.ts';
export { type Json, parseHex, toJson } from './json.ts';
export {
  type Accessor,
  defineStruct,
  defineUnion,
  type Fields,
  type ReadResult,
  registeredStructs,
  type StructInput,
  type StructType,
  type StructValue,
  struct,
  union,
} from './struct.ts';
export {
  array,
  bits,
  bytes,
  type FieldLayout,
  type Flex,
  flex,
  guid,
  type InputOf,
  i32,
  type Reserved,
  reserved,
  u8,
  u16,
  u16be,
  u32,
  u32be,
  u64,
  u64be,
  type ValueOf,
  type WireType,
} from './types.ts';
