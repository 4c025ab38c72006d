#include "kernels/quant/packing.h"

namespace tq::quant {

bool IsPackable(int bits, int64_t n) {
  if (n < 0) return false;
  switch (bits) {
    case 2:
      return n % 4 == 0;
    case 3:
      return n % 8 == 0;
    case 4:
      return n % 2 == 0;
    case 8:
      return true;
    default:
      return false;
  }
}

void PackIndices(const uint8_t* idx, int64_t n, int bits, uint8_t* out) {
  switch (bits) {
    case 2:
      for (int64_t k = 0; k < n; k += 4) {
        *out++ = static_cast<uint8_t>((idx[k] & 3) | (idx[k + 1] & 3) << 2 |
                                      (idx[k + 2] & 3) << 4 | (idx[k + 3] & 3) << 6);
      }
      break;
    case 3:
      for (int64_t k = 0; k < n; k += 8) {
        uint32_t w = 0;
        for (int i = 0; i < 8; ++i) w |= static_cast<uint32_t>(idx[k + i] & 7) << (3 * i);
        out[0] = static_cast<uint8_t>(w);
        out[1] = static_cast<uint8_t>(w >> 8);
        out[2] = static_cast<uint8_t>(w >> 16);
        out += 3;
      }
      break;
    case 4:
      for (int64_t k = 0; k < n; k += 2) {
        *out++ = static_cast<uint8_t>((idx[k] & 15) | (idx[k + 1] & 15) << 4);
      }
      break;
    case 8:
      for (int64_t k = 0; k < n; ++k) out[k] = idx[k];
      break;
  }
}

void UnpackIndices(const uint8_t* packed, int64_t n, int bits, uint8_t* idx) {
  switch (bits) {
    case 2:
      for (int64_t k = 0; k < n; k += 4) {
        const uint8_t b = *packed++;
        idx[k] = b & 3;
        idx[k + 1] = (b >> 2) & 3;
        idx[k + 2] = (b >> 4) & 3;
        idx[k + 3] = (b >> 6) & 3;
      }
      break;
    case 3:
      for (int64_t k = 0; k < n; k += 8) {
        const uint32_t w = packed[0] | static_cast<uint32_t>(packed[1]) << 8 |
                           static_cast<uint32_t>(packed[2]) << 16;
        for (int i = 0; i < 8; ++i) idx[k + i] = (w >> (3 * i)) & 7;
        packed += 3;
      }
      break;
    case 4:
      for (int64_t k = 0; k < n; k += 2) {
        const uint8_t b = *packed++;
        idx[k] = b & 15;
        idx[k + 1] = b >> 4;
      }
      break;
    case 8:
      for (int64_t k = 0; k < n; ++k) idx[k] = packed[k];
      break;
  }
}

}  // namespace tq::quant
