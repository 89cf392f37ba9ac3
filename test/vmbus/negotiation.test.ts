import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { VmbusNegotiationError } from '../../src/vmbus/client/vmbus-client.ts';
import {
  ALL_VERSIONS,
  ChannelMessageType,
  FREEBSD_VERSION_ORDER,
  initiateContactMessage,
  LINUX_VERSION_ORDER,
  VmbusVersion,
  versionResponseMessage,
  versionString,
} from '../../src/vmbus/protocol.ts';
import { VmbusServer } from '../../src/vmbus/server/state.ts';
import { oracleSection } from '../conformance/oracle.ts';
import { makeBus } from './harness.ts';

const upTo = (max: number): number[] => ALL_VERSIONS.filter((v) => v <= max);
const newestFirst = [...ALL_VERSIONS].reverse();

describe('version negotiation', () => {
  it('uses the version list and order Linux uses', () => {
    const versions = oracleSection('vmbus_versions');
    assert.deepEqual(LINUX_VERSION_ORDER, versions.linux_negotiation_order);
    assert.deepEqual(
      ALL_VERSIONS,
      (versions.all_versions as { value: number }[]).map((v) => v.value),
    );
  });

  describe('the server answers INITIATE_CONTACT as Hyper-V does', () => {
    for (const hostMax of ALL_VERSIONS) {
      it(`host maximum ${versionString(hostMax)}`, () => {
        for (const requested of ALL_VERSIONS) {
          const server = new VmbusServer({
            versions: upTo(hostMax),
            vpCount: 2,
            guestPageCount: 1024,
          });
          const v5 = requested >= VmbusVersion.Win10V5;
          const message = initiateContactMessage.write({
            header: { msgtype: ChannelMessageType.InitiateContact },
            vmbus_version_requested: requested,
            target_vcpu: 1,
            ...(v5 ? { msg_sint: 3, msg_vtl: 0 } : { interrupt_page: 0x5000n }),
            monitor_page1: 0x6000n,
            monitor_page2: 0x7000n,
          });
          const actions = server.receive(v5 ? 4 : 1, message);
          const send = actions.find((a) => a.kind === 'send');
          assert.ok(send && send.kind === 'send', 'a VERSION_RESPONSE is sent');
          const response = versionResponseMessage.read(send.payload);
          assert.equal(response.header.msgtype, ChannelMessageType.VersionResponse);
          const accepted = requested <= hostMax;
          assert.equal(
            response.version_supported,
            accepted ? 1 : 0,
            `request ${versionString(requested)}`,
          );
          assert.equal(response.connection_state, 0);
          assert.equal(response.msg_conn_id, accepted && v5 ? 4 : 0);
          assert.equal(send.vp, 1, 'answer goes to the target VCPU');
          assert.equal(send.sint, v5 ? 3 : 2, 'answer goes to msg_sint from 5.0, SINT 2 before');
          assert.equal(server.state, accepted ? 'connected' : 'disconnected');
          if (accepted) {
            assert.equal(server.connected?.interruptPage, v5 ? 0n : 0x5000n);
            assert.equal(server.connected?.messageConnectionId, v5 ? 4 : 1);
          }
        }
      });
    }

    it('refuses a second INITIATE_CONTACT while connected', () => {
      const server = new VmbusServer({ vpCount: 1, guestPageCount: 1024 });
      const message = initiateContactMessage.write({
        header: { msgtype: ChannelMessageType.InitiateContact },
        vmbus_version_requested: VmbusVersion.Win8,
        target_vcpu: 0,
        interrupt_page: 0x5000n,
        monitor_page1: 0n,
        monitor_page2: 0n,
      });
      server.receive(1, message);
      const again = server.receive(1, message).find((a) => a.kind === 'send');
      assert.ok(again?.kind === 'send');
      const response = versionResponseMessage.read(again.payload);
      assert.equal(response.version_supported, 0);
      assert.equal(response.connection_state, 2);
    });
  });

  describe('the guest gets the version Linux would get, through both sides', () => {
    const orders: [string, readonly number[]][] = [
      ['Linux', LINUX_VERSION_ORDER],
      ['FreeBSD', FREEBSD_VERSION_ORDER],
      ['every version', newestFirst],
    ];
    for (const [name, order] of orders) {
      for (const hostMax of ALL_VERSIONS) {
        it(`${name} order against a ${versionString(hostMax)} host`, async (t) => {
          const bus = makeBus({
            hostVersions: upTo(hostMax),
            guestOrder: order,
            memoryBytes: 4 * 1024 * 1024,
          });
          t.after(() => bus.close());
          const expected = order.find((v) => v <= hostMax);
          // Requests that reach the host: every version tried before success,
          // except 5.0+ ones against a host without connection id 4.
          const tried =
            expected === undefined ? order : order.slice(0, order.indexOf(expected) + 1);
          const reachHost = tried.filter(
            (v) => v < VmbusVersion.Win10V5 || hostMax >= VmbusVersion.Win10V5,
          );
          if (expected === undefined) {
            await assert.rejects(bus.client.connect(), VmbusNegotiationError);
          } else {
            assert.equal(await bus.client.connect(), expected);
            assert.equal(
              bus.client.connection.messageConnectionId,
              expected >= VmbusVersion.Win10V5 ? 4 : 1,
            );
            assert.equal(bus.host.server.connected?.version, expected);
            // The next message travels on the negotiated connection id and is accepted.
            await bus.client.requestOffers();
            assert.equal(bus.host.server.stats.dropped, 0);
          }
          assert.equal(bus.host.server.stats.negotiations, reachHost.length);
        });
      }
    }
  });
});
