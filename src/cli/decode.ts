import { readFileSync } from 'node:fs';
import { Command, InvalidArgumentError } from 'commander';
import { decodeNvsp, decodeRndis, NetDecodeError } from '../devices/net/decode.ts';
import {
  DecodeError,
  decodeChannelMessage,
  decodeHvMessage,
  decodePacket,
  decodeRing,
} from '../vmbus/decode.ts';
import { type Json, parseHex } from '../wire/index.ts';

const decoders: Record<string, (bytes: Uint8Array) => Json> = {
  message: decodeChannelMessage,
  'hv-message': decodeHvMessage,
  packet: decodePacket,
  ring: decodeRing,
  nvsp: decodeNvsp,
  rndis: decodeRndis,
};

/**
 * Reads the input argument: hex text, or @path for a file (binary, or hex
 * text if the file holds nothing but hex digits and whitespace).
 */
export function readInput(argument: string): Uint8Array {
  if (!argument.startsWith('@')) return parseHex(argument);
  const path = argument.slice(1);
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (error) {
    throw new DecodeError(
      `cannot read ${path}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`,
    );
  }
  const text = data.toString('latin1');
  if (data.length > 0 && /^[\s0-9a-fA-Fx:]*$/.test(text) && /[0-9a-fA-F]/.test(text))
    return parseHex(text);
  return new Uint8Array(data);
}

/** `hvkit decode <kind> <hex|@file>`: print VMBus bytes as JSON with Linux's field names. */
export function decodeCommand(): Command {
  return new Command('decode')
    .description(
      'decode VMBus bytes to JSON: a channel message, a 256-byte SynIC message, a ring packet, a ring image, an NVSP or an RNDIS message',
    )
    .argument('<kind>', `one of: ${Object.keys(decoders).join(', ')}`, (value) => {
      if (!(value in decoders)) {
        throw new InvalidArgumentError(`expected one of ${Object.keys(decoders).join(', ')}`);
      }
      return value;
    })
    .argument('<input>', 'hex bytes, or @file (binary or hex text)')
    .action((kind: string, input: string) => {
      try {
        const bytes = readInput(input);
        console.log(JSON.stringify(decoders[kind]!(bytes), null, 2));
      } catch (error) {
        if (
          error instanceof DecodeError ||
          error instanceof NetDecodeError ||
          (error instanceof Error && /not hex/.test(error.message))
        ) {
          console.error(`hvkit decode ${kind}: ${error.message}`);
          process.exitCode = 2;
          return;
        }
        throw error;
      }
    });
}
