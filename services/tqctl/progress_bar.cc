#include "services/tqctl/progress_bar.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>

#include "absl/strings/str_format.h"

namespace tq::tqctl {

std::string HumanBytes(double b) {
  const char* units[] = {"B", "KB", "MB", "GB", "TB"};
  int u = 0;
  while (b >= 1000 && u < 4) {
    b /= 1000;
    ++u;
  }
  return u == 0 ? absl::StrFormat("%.0f %s", b, units[u]) : absl::StrFormat("%.1f %s", b, units[u]);
}

std::string HumanDuration(double s) {
  if (!std::isfinite(s) || s < 0) return "--:--";
  const long t = static_cast<long>(s + 0.5);
  if (t >= 3600) return absl::StrFormat("%02d:%02d:%02d", t / 3600, (t / 60) % 60, t % 60);
  return absl::StrFormat("%02d:%02d", t / 60, t % 60);
}

ProgressBar::ProgressBar(FILE* out) : out_(out), tty_(isatty(fileno(out)) != 0) {}

void ProgressBar::Update(const CompressProgress& p) {
  const double frac =
      p.bytes_in_total > 0 ? double(p.bytes_in_done) / double(p.bytes_in_total) : 0.0;
  const double rate = p.elapsed_s > 0 ? p.bytes_in_done / p.elapsed_s : 0.0;
  const double eta = rate > 0 ? (p.bytes_in_total - p.bytes_in_done) / rate : -1;
  if (tty_) {
    const int width = 30;
    const int fill = static_cast<int>(frac * width);
    std::string bar(fill, '#');
    bar.resize(width, '.');
    std::string name = p.current;
    if (name.size() > 40) name = "..." + name.substr(name.size() - 37);
    absl::FPrintF(out_, "\r\033[K%-8s [%s] %3.0f%% %d/%d tensors %s/s ETA %s %s", p.phase, bar,
                  100 * frac, p.tensors_done, p.tensors_total, HumanBytes(rate),
                  HumanDuration(eta), name);
    std::fflush(out_);
    drawn_ = true;
    return;
  }
  // Not a terminal: a line at phase changes and at most every 5 seconds.
  if (p.phase == last_phase_ && p.elapsed_s - last_print_ < 5.0 && p.tensors_done != p.tensors_total) {
    return;
  }
  last_print_ = p.elapsed_s;
  last_phase_ = p.phase;
  absl::FPrintF(out_, "[%7.1fs] %s: %d/%d tensors, %s of %s in (%.0f%%), %s out, %s/s, ETA %s\n",
                p.elapsed_s, p.phase, p.tensors_done, p.tensors_total, HumanBytes(p.bytes_in_done),
                HumanBytes(p.bytes_in_total), 100 * frac, HumanBytes(p.bytes_out_done),
                HumanBytes(rate), HumanDuration(eta));
}

void ProgressBar::Finish() {
  if (tty_ && drawn_) absl::FPrintF(out_, "\n");
  drawn_ = false;
}

}  // namespace tq::tqctl
