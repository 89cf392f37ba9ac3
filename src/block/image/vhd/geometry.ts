/**
 * CHS geometry of a VHD footer, computed as the VHD specification's
 * appendix prescribes: the largest geometry whose product does not exceed
 * the disk's sectors, capped at 65535 cylinders x 16 heads x 255 sectors.
 * (The virtual size is the footer's current size; the geometry is advisory.)
 */
export interface Chs {
  readonly cylinders: number;
  readonly heads: number;
  readonly sectorsPerTrack: number;
}

export function chsGeometry(size: number): Chs {
  let total = Math.floor(size / 512);
  if (total > 65535 * 16 * 255) total = 65535 * 16 * 255;
  let spt: number;
  let heads: number;
  let cylinderTimesHeads: number;
  if (total >= 65535 * 16 * 63) {
    spt = 255;
    heads = 16;
    cylinderTimesHeads = Math.floor(total / spt);
  } else {
    spt = 17;
    cylinderTimesHeads = Math.floor(total / spt);
    heads = Math.max(4, Math.floor((cylinderTimesHeads + 1023) / 1024));
    if (cylinderTimesHeads >= heads * 1024 || heads > 16) {
      spt = 31;
      heads = 16;
      cylinderTimesHeads = Math.floor(total / spt);
    }
    if (cylinderTimesHeads >= heads * 1024) {
      spt = 63;
      heads = 16;
      cylinderTimesHeads = Math.floor(total / spt);
    }
  }
  return { cylinders: Math.floor(cylinderTimesHeads / heads), heads, sectorsPerTrack: spt };
}
