/**
 * The host's VMBus server as a state machine that does no I/O: it consumes
 * the guest's channel messages and the devices' completions, and answers
 * with actions (messages to send, channels to open or close) that the host
 * bus task carries out. Behaviour follows what Hyper-V does as Linux's
 * drivers/hv/{connection,channel_mgmt,channel}.c expect it, and the OpenVMM
 * vmbus_server: version negotiation, offers, GPADLs, open/close, rescind,
 * unload, modify-channel.
 *
 * Every guest message is untrusted: wrong size, wrong state, unknown relid
 * or GPADL are counted and dropped (or answered with a failure status where
 * the protocol has one), never thrown.
 */
import type { OfferParameters } from '../device.ts';
import { type Gpadl, GpadlTable, ringGpadlProblem } from '../gpadl.ts';
import { checkMessageFrame } from '../message-frame.ts';
import {
  ALL_VERSIONS,
  ChannelMessageType,
  channelConnectionId,
  channelMessageHeader,
  channelMessageName,
  closeChannelMessage,
  gpadlCreatedMessage,
  gpadlTeardownMessage,
  gpadlTorndownMessage,
  modifyChannelMessage,
  modifyChannelResponseMessage,
  openChannelMessage,
  openResultMessage,
  relidReleasedMessage,
  rescindOfferMessage,
  STATUS_SUCCESS,
  STATUS_UNSUCCESSFUL,
  tlConnectRequestMessage,
  tlConnectResultMessage,
  VmbusVersion,
} from '../protocol.ts';
import type { ChannelSummary, ServerAction, ServerOptions, ServerStats } from './actions.ts';
import { type ChannelRecord, channelSummary, newChannelRecord } from './channel-record.ts';
import { answerInitiateContact, type ConnectionInfo } from './negotiation.ts';
import { offerChannelPayload } from './offer-message.ts';

export type { ChannelSummary, ServerAction, ServerOptions, ServerStats } from './actions.ts';
export type { ConnectionInfo } from './negotiation.ts';

/** NTSTATUS the host answers hv_sock connects with (no hv_sock services here). */
const STATUS_CONNECTION_REFUSED = 0xc0000236 | 0;

export class VmbusServer {
  readonly versions: readonly number[];
  readonly gpadls: GpadlTable;
  readonly stats: ServerStats = {
    messagesIn: 0,
    messagesOut: 0,
    dropped: 0,
    lastDropReasons: [],
    negotiations: 0,
    unloads: 0,
  };
  private connection: ConnectionInfo | undefined;
  private phase: 'disconnected' | 'connected' | 'unloading' = 'disconnected';
  private offersRequested = false;
  private readonly channels = new Map<number, ChannelRecord>();
  private readonly dedicated: boolean;

  constructor(private readonly options: ServerOptions) {
    this.versions = [...(options.versions ?? ALL_VERSIONS)].sort((a, b) => a - b);
    this.gpadls = new GpadlTable(options.guestPageCount);
    this.dedicated = options.dedicatedInterrupts ?? true;
  }

  /** The highest version this host accepts. */
  get maxVersion(): number {
    return this.versions.at(-1) ?? 0;
  }

  /** Whether this host listens on connection id 4 (hosts that know 5.0 and later). */
  get usesConnectionId4(): boolean {
    return this.maxVersion >= VmbusVersion.Win10V5;
  }

  get connected(): ConnectionInfo | undefined {
    return this.phase === 'connected' ? this.connection : undefined;
  }

  get state(): 'disconnected' | 'connected' | 'unloading' {
    return this.phase;
  }

  channelSummaries(): ChannelSummary[] {
    return [...this.channels.values()].sort((a, b) => a.relid - b.relid).map(channelSummary);
  }

  /** Where a channel's host-to-guest interrupts go (its target VP and SINT). */
  interruptTarget(relid: number): { vp: number; sint: number } | undefined {
    const record = this.channels.get(relid);
    if (!record || !this.connection) return undefined;
    return { vp: record.targetVp, sint: this.connection.sint };
  }

  // --- device side --------------------------------------------------------

  /** Adds an offer (a device's primary channel or a sub-channel). */
  addOffer(
    deviceId: number,
    offer: OfferParameters,
    subchannelIndex = 0,
  ): { relid: number; actions: ServerAction[] } {
    const relid = this.allocateRelid();
    const record = newChannelRecord(relid, deviceId, offer, subchannelIndex);
    this.channels.set(relid, record);
    const actions: ServerAction[] = [];
    if (this.phase === 'connected' && this.offersRequested) this.sendOffer(record, actions);
    return { relid, actions };
  }

  /** Relids of a device's channels, primary first. */
  deviceRelids(deviceId: number): number[] {
    return [...this.channels.values()]
      .filter((c) => c.deviceId === deviceId)
      .sort((a, b) => a.subchannelIndex - b.subchannelIndex)
      .map((c) => c.relid);
  }

  nextSubchannelIndex(deviceId: number): number {
    let next = 1;
    for (const c of this.channels.values()) {
      if (c.deviceId === deviceId) next = Math.max(next, c.subchannelIndex + 1);
    }
    return next;
  }

  /**
   * Withdraws a channel (device removed): closes it if open and tells the
   * guest. The relid is reused only after the guest's RELID_RELEASED.
   */
  rescind(relid: number): ServerAction[] {
    const record = this.channels.get(relid);
    if (!record || record.rescinded) return [];
    record.rescinded = true;
    const actions: ServerAction[] = [];
    if (record.phase === 'open') {
      record.phase = 'closing';
      actions.push({ kind: 'close-channel', relid, deviceId: record.deviceId });
    } else if (record.phase === 'opening') {
      record.closeAfterOpen = true;
    }
    if (record.offered && this.phase === 'connected') {
      this.send(
        actions,
        rescindOfferMessage.write({
          header: { msgtype: ChannelMessageType.RescindChannelOffer },
          child_relid: relid,
        }),
      );
    } else {
      // The guest never saw it: nothing to release.
      record.relidReleased = true;
      this.forgetIfDone(record);
    }
    return actions;
  }

  /** The device finished opening (ok) or refused. */
  openCompleted(relid: number, ok: boolean): ServerAction[] {
    const record = this.channels.get(relid);
    const actions: ServerAction[] = [];
    if (record?.phase !== 'opening') return actions;
    if (ok) {
      record.phase = 'open';
    } else {
      record.phase = 'offered';
      this.releaseRing(record, actions);
    }
    if (this.phase === 'connected') {
      this.send(
        actions,
        openResultMessage.write({
          header: { msgtype: ChannelMessageType.OpenChannelResult },
          child_relid: relid,
          openid: record.openId,
          status: ok ? STATUS_SUCCESS : STATUS_UNSUCCESSFUL,
        }),
      );
    }
    if (ok && (record.closeAfterOpen || this.phase === 'unloading')) {
      record.closeAfterOpen = false;
      record.phase = 'closing';
      actions.push({ kind: 'close-channel', relid, deviceId: record.deviceId });
    }
    if (!ok) this.maybeFinishUnload(actions);
    return actions;
  }

  /** The device stopped using a channel; its ring GPADL view is released. */
  closeCompleted(relid: number): ServerAction[] {
    const record = this.channels.get(relid);
    const actions: ServerAction[] = [];
    if (record?.phase !== 'closing') return actions;
    record.phase = 'offered';
    this.releaseRing(record, actions);
    this.forgetIfDone(record);
    this.maybeFinishUnload(actions);
    return actions;
  }

  /** A device released a view of a GPADL it had mapped. */
  releaseGpadlView(handle: number): ServerAction[] {
    const actions: ServerAction[] = [];
    if (this.gpadls.release(handle)) this.sendTorndown(handle, actions);
    return actions;
  }

  /** A device maps a GPADL (its receive/send buffers). */
  acquireGpadl(handle: number): Gpadl | undefined {
    return this.gpadls.acquire(handle);
  }

  // --- guest messages --------------------------------------------------------

  /** A message the guest posted on `connectionId` (the whole SynIC payload). */
  receive(connectionId: number, payload: Uint8Array): ServerAction[] {
    this.stats.messagesIn++;
    const actions: ServerAction[] = [];
    const frame = checkMessageFrame(payload, 'guest-to-host');
    if (!frame.ok) return this.drop(actions, frame.reason);
    const { type, spec } = frame;
    if (type === ChannelMessageType.InitiateContact) {
      this.initiateContact(connectionId, payload, actions);
      return actions;
    }
    const connection = this.connection;
    if (this.phase !== 'connected' || !connection) {
      if (this.phase === 'unloading')
        return this.drop(actions, `${channelMessageName(type)} while unloading`);
      return this.drop(actions, `${channelMessageName(type)} before INITIATE_CONTACT`);
    }
    if (connectionId !== connection.messageConnectionId) {
      return this.drop(actions, `${channelMessageName(type)} on connection id ${connectionId}`);
    }
    if (connection.version < spec.minVersion) {
      return this.drop(
        actions,
        `${channelMessageName(type)} needs version ${spec.minVersion.toString(16)}`,
      );
    }
    switch (type) {
      case ChannelMessageType.RequestOffers:
        this.requestOffers(actions);
        break;
      case ChannelMessageType.OpenChannel:
        this.openChannel(payload, actions);
        break;
      case ChannelMessageType.CloseChannel:
        this.closeChannel(payload, actions);
        break;
      case ChannelMessageType.GpadlHeader:
        this.gpadlEvent(this.gpadls.header(payload), actions);
        break;
      case ChannelMessageType.GpadlBody:
        this.gpadlEvent(this.gpadls.body(payload), actions);
        break;
      case ChannelMessageType.GpadlTeardown:
        this.gpadlTeardown(payload, actions);
        break;
      case ChannelMessageType.RelidReleased:
        this.relidReleased(payload, actions);
        break;
      case ChannelMessageType.Unload:
        this.unload(actions);
        break;
      case ChannelMessageType.ModifyChannel:
        this.modifyChannel(payload, actions);
        break;
      case ChannelMessageType.TlConnectRequest:
        this.tlConnect(payload, actions);
        break;
      default:
        this.drop(actions, `${channelMessageName(type)} is not handled`);
    }
    return actions;
  }

  private initiateContact(
    connectionId: number,
    payload: Uint8Array,
    actions: ServerAction[],
  ): void {
    this.stats.negotiations++;
    const answer = answerInitiateContact(
      payload,
      connectionId,
      this.versions,
      this.options.vpCount,
      this.phase !== 'disconnected',
    );
    if (answer.kind === 'invalid') {
      this.drop(actions, answer.reason);
      return;
    }
    this.stats.messagesOut++;
    actions.push({ kind: 'send', vp: answer.vp, sint: answer.sint, payload: answer.payload });
    const connection = answer.connection;
    if (!connection) return;
    this.connection = connection;
    this.phase = 'connected';
    this.offersRequested = false;
    actions.push({
      kind: 'connected',
      version: connection.version,
      messageConnectionId: connection.messageConnectionId,
    });
  }

  private requestOffers(actions: ServerAction[]): void {
    this.offersRequested = true;
    const pending = [...this.channels.values()]
      .filter((c) => !c.rescinded && !c.offered)
      .sort((a, b) => a.relid - b.relid);
    for (const record of pending) this.sendOffer(record, actions);
    this.send(
      actions,
      channelMessageHeader.write({ msgtype: ChannelMessageType.AllOffersDelivered }),
    );
  }

  private sendOffer(record: ChannelRecord, actions: ServerAction[]): void {
    record.offered = true;
    this.send(
      actions,
      offerChannelPayload(
        record.offer,
        record.relid,
        record.subchannelIndex,
        this.connection?.version ?? 0,
        this.dedicated,
      ),
    );
  }

  private openChannel(payload: Uint8Array, actions: ServerAction[]): void {
    const m = openChannelMessage.read(payload);
    const record = this.channels.get(m.child_relid);
    if (!record || record.rescinded) {
      this.drop(
        actions,
        `OPENCHANNEL for ${record ? 'rescinded' : 'unknown'} relid ${m.child_relid}`,
      );
      return;
    }
    const fail = (reason: string): void => {
      this.drop(actions, `OPENCHANNEL relid ${m.child_relid}: ${reason}`);
      this.send(
        actions,
        openResultMessage.write({
          header: { msgtype: ChannelMessageType.OpenChannelResult },
          child_relid: m.child_relid,
          openid: m.openid,
          status: STATUS_UNSUCCESSFUL,
        }),
      );
    };
    if (record.phase !== 'offered') {
      fail(`channel is ${record.phase}`);
      return;
    }
    if (m.target_vp >= this.options.vpCount) {
      fail(`target VP ${m.target_vp} does not exist`);
      return;
    }
    const gpadl = this.gpadls.get(m.ringbuffer_gpadlhandle);
    if (!gpadl) {
      fail(`ring GPADL ${m.ringbuffer_gpadlhandle} is not established`);
      return;
    }
    const down = m.downstream_ringbuffer_pageoffset;
    const problem = ringGpadlProblem(gpadl, down);
    if (problem) {
      fail(problem);
      return;
    }
    if (!this.gpadls.acquire(gpadl.handle)) {
      fail(`ring GPADL ${gpadl.handle} is being torn down`);
      return;
    }
    record.phase = 'opening';
    record.openId = m.openid;
    record.targetVp = m.target_vp;
    record.ringGpadl = gpadl.handle;
    actions.push({
      kind: 'open-channel',
      relid: record.relid,
      deviceId: record.deviceId,
      request: {
        relid: record.relid,
        subchannelIndex: record.subchannelIndex,
        targetVp: m.target_vp,
        userData: m.userdata,
      },
      gpadl,
      downstreamPageOffset: down,
      connectionId: channelConnectionId(record.relid),
    });
  }

  private closeChannel(payload: Uint8Array, actions: ServerAction[]): void {
    const { child_relid } = closeChannelMessage.read(payload);
    const record = this.channels.get(child_relid);
    if (!record) {
      this.drop(actions, `CLOSECHANNEL for unknown relid ${child_relid}`);
      return;
    }
    if (record.phase === 'open') {
      record.phase = 'closing';
      actions.push({ kind: 'close-channel', relid: child_relid, deviceId: record.deviceId });
    } else if (record.phase === 'opening') {
      record.closeAfterOpen = true;
    } else if (!record.rescinded) {
      // A rescinded channel the host already closed needs nothing more.
      this.drop(actions, `CLOSECHANNEL for relid ${child_relid} in phase ${record.phase}`);
    }
  }

  private gpadlEvent(event: ReturnType<GpadlTable['header']>, actions: ServerAction[]): void {
    if (event.kind === 'pending') return;
    if (event.kind === 'invalid') {
      this.drop(actions, event.reason);
      return;
    }
    if (event.status !== 0) this.stats.dropped++;
    this.send(
      actions,
      gpadlCreatedMessage.write({
        header: { msgtype: ChannelMessageType.GpadlCreated },
        child_relid: event.childRelid,
        gpadl: event.handle,
        creation_status: event.status >>> 0,
      }),
    );
  }

  private gpadlTeardown(payload: Uint8Array, actions: ServerAction[]): void {
    const { gpadl } = gpadlTeardownMessage.read(payload);
    const result = this.gpadls.teardown(gpadl);
    if (result === 'unknown') {
      this.drop(actions, `GPADL_TEARDOWN of unknown GPADL ${gpadl}`);
    } else if (result === 'done') {
      this.sendTorndown(gpadl, actions);
    }
  }

  private sendTorndown(handle: number, actions: ServerAction[]): void {
    if (this.phase !== 'connected') return;
    this.send(
      actions,
      gpadlTorndownMessage.write({
        header: { msgtype: ChannelMessageType.GpadlTorndown },
        gpadl: handle,
      }),
    );
  }

  private relidReleased(payload: Uint8Array, actions: ServerAction[]): void {
    const { child_relid } = relidReleasedMessage.read(payload);
    const record = this.channels.get(child_relid);
    if (!record?.rescinded) {
      this.drop(actions, `RELID_RELEASED for relid ${child_relid} that was not rescinded`);
      return;
    }
    record.relidReleased = true;
    this.forgetIfDone(record);
  }

  private unload(actions: ServerAction[]): void {
    this.stats.unloads++;
    this.phase = 'unloading';
    for (const record of this.channels.values()) {
      if (record.phase === 'open') {
        record.phase = 'closing';
        actions.push({ kind: 'close-channel', relid: record.relid, deviceId: record.deviceId });
      }
    }
    this.maybeFinishUnload(actions);
  }

  private maybeFinishUnload(actions: ServerAction[]): void {
    if (this.phase !== 'unloading') return;
    for (const record of this.channels.values()) {
      if (record.phase === 'opening' || record.phase === 'closing') return;
    }
    const connection = this.connection;
    // Everything is closed: forget GPADLs and withdrawn channels, reset offers.
    this.gpadls.clear();
    for (const record of [...this.channels.values()]) {
      record.offered = false;
      record.ringGpadl = undefined;
      if (record.rescinded) this.channels.delete(record.relid);
    }
    this.offersRequested = false;
    this.phase = 'disconnected';
    this.connection = undefined;
    if (connection && connection.version >= VmbusVersion.Win7) {
      this.stats.messagesOut++;
      actions.push({
        kind: 'send',
        vp: connection.targetVp,
        sint: connection.sint,
        payload: channelMessageHeader.write({ msgtype: ChannelMessageType.UnloadResponse }),
      });
    }
    actions.push({ kind: 'disconnected' });
  }

  private modifyChannel(payload: Uint8Array, actions: ServerAction[]): void {
    const m = modifyChannelMessage.read(payload);
    const record = this.channels.get(m.child_relid);
    const ok =
      record !== undefined && record.phase === 'open' && m.target_vp < this.options.vpCount;
    if (ok) {
      record.targetVp = m.target_vp;
      actions.push({ kind: 'modify-channel', relid: m.child_relid, targetVp: m.target_vp });
    } else {
      this.drop(actions, `MODIFYCHANNEL relid ${m.child_relid} to VP ${m.target_vp}`);
    }
    // Only 5.3 hosts acknowledge (Linux waits for the response from 5.3 on).
    if ((this.connection?.version ?? 0) >= VmbusVersion.Win10V5_3) {
      this.send(
        actions,
        modifyChannelResponseMessage.write({
          header: { msgtype: ChannelMessageType.ModifyChannelResponse },
          child_relid: m.child_relid,
          status: ok ? STATUS_SUCCESS : STATUS_UNSUCCESSFUL,
        }),
      );
    }
  }

  private tlConnect(payload: Uint8Array, actions: ServerAction[]): void {
    const m = tlConnectRequestMessage.read(payload);
    if ((this.connection?.version ?? 0) < VmbusVersion.Win10V4_1) return;
    this.send(
      actions,
      tlConnectResultMessage.write({
        header: { msgtype: ChannelMessageType.TlConnectResult },
        guest_endpoint_id: m.guest_endpoint_id,
        host_service_id: m.host_service_id,
        status: STATUS_CONNECTION_REFUSED,
      }),
    );
  }

  // --- helpers ---------------------------------------------------------------

  private releaseRing(record: ChannelRecord, actions: ServerAction[]): void {
    if (record.ringGpadl === undefined) return;
    const handle = record.ringGpadl;
    record.ringGpadl = undefined;
    if (this.gpadls.release(handle)) this.sendTorndown(handle, actions);
  }

  private forgetIfDone(record: ChannelRecord): void {
    if (record.rescinded && record.relidReleased && record.phase === 'offered') {
      this.channels.delete(record.relid);
    }
  }

  private allocateRelid(): number {
    let relid = 1;
    while (this.channels.has(relid)) relid++;
    return relid;
  }

  private send(actions: ServerAction[], payload: Uint8Array): void {
    const c = this.connection;
    if (!c) return;
    this.stats.messagesOut++;
    actions.push({ kind: 'send', vp: c.targetVp, sint: c.sint, payload });
  }

  private drop(actions: ServerAction[], reason: string): ServerAction[] {
    this.stats.dropped++;
    this.stats.lastDropReasons.push(reason);
    if (this.stats.lastDropReasons.length > 16) this.stats.lastDropReasons.shift();
    actions.push({ kind: 'dropped', reason });
    return actions;
  }
}
