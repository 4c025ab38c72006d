// File: services/tqctl/progress_bar.h
//
// Renders compression progress on stderr: a redrawn bar on a terminal, periodic log lines
// otherwise (CI logs, pipes).
#ifndef TQSERVE_SERVICES_TQCTL_PROGRESS_BAR_H_
#define TQSERVE_SERVICES_TQCTL_PROGRESS_BAR_H_

#include <cstdio>
#include <string>

#include "engine/compress/compressor.h"

namespace tq::tqctl {

class ProgressBar {
 public:
  explicit ProgressBar(FILE* out);
  void Update(const CompressProgress& p);
  // Ends the bar's line.
  void Finish();

 private:
  FILE* out_;
  bool tty_;
  double last_print_ = -1;
  std::string last_phase_;
  bool drawn_ = false;
};

// "12.3 MB", "1.20 GB".
std::string HumanBytes(double bytes);
// "01:02:03" or "02:03".
std::string HumanDuration(double seconds);

}  // namespace tq::tqctl

#endif  // TQSERVE_SERVICES_TQCTL_PROGRESS_BAR_H_
