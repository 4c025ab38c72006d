// File: kernels/util/status_macros.h
//
// Status propagation helpers. Debian's Abseil (20220623) predates absl/status/status_macros.h,
// so the project keeps its own two macros:
//
//   absl::Status Load() {
//     TQ_RETURN_IF_ERROR(Open());
//     TQ_ASSIGN_OR_RETURN(Header h, ParseHeader(bytes));
//     ...
//   }
#ifndef TQSERVE_KERNELS_UTIL_STATUS_MACROS_H_
#define TQSERVE_KERNELS_UTIL_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define TQ_STATUS_CONCAT_INNER_(a, b) a##b
#define TQ_STATUS_CONCAT_(a, b) TQ_STATUS_CONCAT_INNER_(a, b)

// Evaluates `expr` (an absl::Status) and returns it from the current function if not OK.
#define TQ_RETURN_IF_ERROR(expr)                          \
  do {                                                    \
    ::absl::Status tq_status_ = (expr);                   \
    if (!tq_status_.ok()) return tq_status_;              \
  } while (0)

// `TQ_ASSIGN_OR_RETURN(lhs, expr)`: evaluates `expr` (an absl::StatusOr<T>); on error returns the
// status, otherwise moves the value into `lhs` (which may be a declaration).
#define TQ_ASSIGN_OR_RETURN(lhs, expr) \
  TQ_ASSIGN_OR_RETURN_IMPL_(TQ_STATUS_CONCAT_(tq_statusor_, __LINE__), lhs, expr)

#define TQ_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                              \
  if (!statusor.ok()) return std::move(statusor).status(); \
  lhs = std::move(statusor).value()

#endif  // TQSERVE_KERNELS_UTIL_STATUS_MACROS_H_
