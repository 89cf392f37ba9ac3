/**
 * Takes set bits out of a run of 32-bit flag words shared with another
 * thread (SIEFP event flags, the interrupt page, the hypervisor's event-port
 * bitmap): each word is swapped for zero atomically, so a bit set
 * concurrently is either seen now or left for the next scan, never lost.
 * Calls `onBit(index)` for each bit that was set, lowest word first.
 */
export function takeFlagBits(
  words: Int32Array,
  firstWord: number,
  wordCount: number,
  onBit: (index: number) => void,
): void {
  for (let w = 0; w < wordCount; w++) {
    if (Atomics.load(words, firstWord + w) === 0) continue;
    let bits = Atomics.exchange(words, firstWord + w, 0) >>> 0;
    while (bits !== 0) {
      const bit = 31 - Math.clz32(bits);
      bits &= ~(1 << bit);
      onBit(w * 32 + bit);
    }
  }
}
