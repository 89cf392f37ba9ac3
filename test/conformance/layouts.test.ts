import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import { registeredStructs } from '../../src/wire/index.ts';
import { loadAllProtocols, oracleStructs } from './oracle.ts';

/** Structs the foundation must declare (the list), all checked against the oracle. */
const required = [
  'hv_ring_buffer',
  'vmpacket_descriptor',
  'vmdata_gpa_direct',
  'vmtransfer_page_packet_header',
  'gpa_range',
  'hv_message',
  'hv_message_header',
  'hv_input_post_message',
  'vmbus_channel_message_header',
  'vmbus_channel_offer_channel',
  'vmbus_channel_rescind_offer',
  'vmbus_channel_open_channel',
  'vmbus_channel_open_result',
  'vmbus_channel_close_channel',
  'vmbus_channel_gpadl_header',
  'vmbus_channel_gpadl_body',
  'vmbus_channel_gpadl_created',
  'vmbus_channel_gpadl_teardown',
  'vmbus_channel_gpadl_torndown',
  'vmbus_channel_relid_released',
  'vmbus_channel_initiate_contact',
  'vmbus_channel_version_response',
  'vmbus_channel_tl_connect_request',
  'vmbus_channel_modifychannel',
  'vmbus_channel_modifychannel_response',
];

describe('wire declarations match the layouts measured from Linux', () => {
  const known = oracleStructs();
  before(async () => {
    const files = await loadAllProtocols();
    assert.ok(files.length > 0, 'no protocol.ts found under src/');
  });

  it('declares every struct the foundation needs', () => {
    const declared = registeredStructs();
    const missing = required.filter((name) => !declared.has(name));
    assert.deepEqual(missing, []);
  });

  it('has the size and every field offset of each declared struct the oracle knows', () => {
    const problems: string[] = [];
    let checkedStructs = 0;
    let checkedFields = 0;
    for (const [name, type] of registeredStructs()) {
      const entry = known.get(name);
      if (!entry) continue;
      checkedStructs++;
      const { struct } = entry;
      if (type.size !== struct.sizeof) {
        problems.push(`${name}: size ${type.size}, Linux ${struct.sizeof}`);
      }
      const ours = new Map(type.layout.map((f) => [f.name, f]));
      for (const field of struct.fields) {
        checkedFields++;
        const mine = ours.get(field.name);
        if (!mine) {
          problems.push(`${name}.${field.name}: not declared`);
          continue;
        }
        if (mine.offset !== field.offset) {
          problems.push(`${name}.${field.name}: offset ${mine.offset}, Linux ${field.offset}`);
        }
        if (field.bitfield) {
          if (mine.bitOffset !== field.bit_offset || mine.bitWidth !== field.bit_width) {
            problems.push(
              `${name}.${field.name}: bits ${mine.bitOffset}/${mine.bitWidth}, Linux ${field.bit_offset}/${field.bit_width}`,
            );
          }
        } else if (field.flexible_array) {
          if (!mine.flexible || mine.elemSize !== field.elem_size) {
            problems.push(`${name}.${field.name}: not a flexible array of ${field.elem_size}`);
          }
        } else if (mine.size !== field.size) {
          problems.push(`${name}.${field.name}: size ${mine.size}, Linux ${field.size}`);
        }
      }
    }
    assert.deepEqual(problems, []);
    assert.ok(checkedStructs >= required.length, `checked only ${checkedStructs} structs`);
    assert.ok(checkedFields > 100, `checked only ${checkedFields} fields`);
  });
});
