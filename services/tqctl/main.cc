// tqctl: the tqserve command-line client.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/checkpoint/manifest.h"
#include "services/tqctl/commands.h"

namespace {

const char kUsage[] =
    "usage: tqctl COMMAND [options]\n"
    "\n"
    "commands:\n"
    "  compress SRC DST   compress a Hugging Face checkpoint into a TQ checkpoint\n"
    "                     (in-process, or on a compression server with --server)\n"
    "  inspect CKPT       show what a TQ checkpoint holds (and its error vs --source)\n"
    "  verify URI         check every file of a checkpoint against its manifest\n"
    "  list PREFIX        list the TQ checkpoints under a storage prefix\n"
    "  job get|cancel ID  show or cancel a job of a compression server\n"
    "  generate PROMPT    generate text with the in-process CPU engine (--model URI), or\n"
    "                     streamed from an inference server (--server HOST:PORT)\n"
    "  eval-ppl           perplexity of a text file (--model URI --data FILE)\n"
    "  info               what an inference server serves and its load (--server HOST:PORT)\n"
    "  bench              serving benchmark of an inference server, like vllm bench serve:\n"
    "                     throughput, TTFT, TPOT, ITL, E2E latency (--server HOST:PORT)\n"
    "  version            print the version\n"
    "\n"
    "Run 'tqctl COMMAND --help' for the options of a command.\n";

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  const std::vector<std::string> args(argv + 2, argv + argc);
  if (cmd == "compress") return tq::tqctl::RunCompress(args);
  if (cmd == "inspect") return tq::tqctl::RunInspect(args);
  if (cmd == "verify") return tq::tqctl::RunVerify(args);
  if (cmd == "list") return tq::tqctl::RunList(args);
  if (cmd == "job") return tq::tqctl::RunJob(args);
  if (cmd == "generate") return tq::tqctl::RunGenerate(args);
  if (cmd == "eval-ppl") return tq::tqctl::RunEvalPpl(args);
  if (cmd == "info") return tq::tqctl::RunInfo(args);
  if (cmd == "bench") return tq::tqctl::RunBench(args);
  if (cmd == "version" || cmd == "--version") {
    std::printf("tqctl %s\n", tq::kTqserveVersion);
    return 0;
  }
  std::fprintf(stderr, "tqctl: unknown command '%s'\n\n%s", cmd.c_str(), kUsage);
  return 2;
}
