/**
 * The import rules between hvkit's layers (README "Architecture"): arrows
 * point at what a layer may import, nothing imports upward, and a device sees
 * the bus only through its public seam. `npm test` runs this check.
 */
const seam = '^src/vmbus/(device|queue|channel-set|protocol|rate-limited-log)\\.ts$';

/** Each layer and the layers under it that it may import. */
const layers = {
  wire: [],
  hv: ['wire'],
  vmbus: ['wire', 'hv'],
  block: ['wire'],
  nbd: ['wire', 'block'],
  scsi: ['wire', 'block'],
  devices: ['wire', 'vmbus', 'block', 'nbd', 'scsi'],
  vm: ['wire', 'hv', 'vmbus', 'block', 'nbd', 'scsi', 'devices'],
  cli: ['wire', 'hv', 'vmbus', 'block', 'nbd', 'scsi', 'devices', 'vm'],
};

const names = Object.keys(layers);
const layerRules = names.map((layer) => {
  const allowed = new Set([layer, ...layers[layer]]);
  const forbidden = names.filter((n) => !allowed.has(n));
  return {
    name: `layer-${layer}`,
    comment: `src/${layer}/ may import only ${[...allowed].join(', ')}`,
    severity: 'error',
    from: { path: `^src/${layer}/` },
    to: { path: `^src/(${forbidden.join('|') || '$^'})/` },
  };
});

module.exports = {
  forbidden: [
    ...layerRules,
    {
      name: 'device-sees-the-seam',
      comment:
        'a device imports from vmbus/ only its public seam: device.ts, queue.ts, channel-set.ts, protocol.ts, rate-limited-log.ts',
      severity: 'error',
      from: { path: '^src/devices/' },
      to: { path: '^src/vmbus/', pathNot: seam },
    },
    {
      name: 'devices-apart',
      comment: 'one device folder does not import another',
      severity: 'error',
      from: { path: '^src/devices/([^/]+)/' },
      to: { path: '^src/devices/', pathNot: '^src/devices/$1/' },
    },
    {
      name: 'no-circular',
      comment: 'modules do not import each other in a loop',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
    {
      name: 'src-stands-alone',
      comment: 'product code never imports tests or benchmarks',
      severity: 'error',
      from: { path: '^src/' },
      to: { path: '^(test|bench)/' },
    },
    {
      name: 'not-to-unresolvable',
      severity: 'error',
      from: {},
      to: { couldNotResolve: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: { extensions: ['.ts', '.js'] },
  },
};
