/**
 * Raised when bytes do not fit a wire declaration: too short, a value out of
 * range for its field, or a malformed GUID. The message always names the
 * struct or field and gives the actual numbers.
 */
export class WireError extends Error {
  override readonly name = 'WireError';
}
