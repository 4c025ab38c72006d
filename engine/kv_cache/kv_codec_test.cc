// KV cache formats: names, options, boundary layers and sinks per preset (ALGORITHMS.md §4.2,
// §4.4), and the attention-space contract of every codec (kv_codec.h).
#include "engine/kv_cache/kv_codec.h"

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gtest/gtest.h"
#include "kernels/quant/kv_quant.h"

namespace tq {
namespace {

KvCacheFormat Format(const std::string& spec, int layers, int d) {
  auto f = MakeKvCacheFormat(spec, layers, d);
  EXPECT_TRUE(f.ok()) << spec << ": " << f.status();
  return *std::move(f);
}

std::vector<int> WideKeyLayers(const KvCacheFormat& f) {
  std::vector<int> out;
  const int64_t mid = f.keys[f.num_layers() / 2]->BytesPerVector(f.head_dim);
  for (int l = 0; l < f.num_layers(); ++l) {
    if (f.keys[l]->BytesPerVector(f.head_dim) != mid) out.push_back(l);
  }
  return out;
}

TEST(KvCacheFormatTest, DefaultsPerPreset) {
  // vLLM: first 2 and last 2 layers in the native dtype (its test: ["0","1","30","31"] of 32).
  const KvCacheFormat v = Format("k3v4_nc", 32, 128);
  EXPECT_EQ(v.name, "k3v4_nc:sink=0,boundary=2");
  EXPECT_EQ(WideKeyLayers(v), (std::vector<int>{0, 1, 30, 31}));
  EXPECT_STREQ(v.keys[0]->name(), "bf16");
  EXPECT_STREQ(v.values[31]->name(), "bf16");
  EXPECT_EQ(v.sink_tokens, 0);
  EXPECT_EQ(v.sink, nullptr);
  EXPECT_EQ(v.BytesPerTokenPerHead(), 4 * (256 + 256) + 28 * (50 + 68));
  // Plugin: sinks 4, boundary 5 with 8-bit keys (values unchanged).
  const KvCacheFormat p = Format("turbo3", 32, 128);
  EXPECT_EQ(p.name, "turbo3:qjl=0,sink=4,boundary=5");
  EXPECT_EQ(WideKeyLayers(p), (std::vector<int>{0, 1, 2, 3, 4, 27, 28, 29, 30, 31}));
  EXPECT_EQ(p.keys[0]->BytesPerVector(128), 132);
  EXPECT_EQ(p.values[0]->BytesPerVector(128), 52);
  EXPECT_EQ(p.sink_tokens, 4);
  ASSERT_NE(p.sink, nullptr);
  EXPECT_STREQ(p.sink->name(), "bf16");
  // Plain codecs: nothing else.
  const KvCacheFormat b = Format("bf16", 6, 64);
  EXPECT_EQ(b.name, "bf16");
  EXPECT_EQ(b.sink_tokens, 0);
  EXPECT_EQ(b.BytesPerTokenPerHead(), 6 * 2 * 128);
  EXPECT_EQ(Format("fp8", 6, 64).name, "fp8:sink=0,boundary=0");
  // A shallow model: boundaries may cover every layer.
  const KvCacheFormat all = Format("turbo4", 6, 64);
  EXPECT_EQ(WideKeyLayers(all).size(), 0u);  // every key is 8-bit, none narrower
  EXPECT_EQ(all.keys[3]->BytesPerVector(64), 68);
}

TEST(KvCacheFormatTest, Options) {
  const KvCacheFormat f = Format("turbo4:qjl=1,sink=0,boundary=0", 6, 64);
  EXPECT_EQ(f.name, "turbo4:qjl=1,sink=0,boundary=0");
  EXPECT_TRUE(f.qjl);
  EXPECT_EQ(f.keys[0]->AttentionDim(64), 128);
  EXPECT_EQ(f.keys[0]->BytesPerVector(64), 24 + 4 + 8 + 4);
  EXPECT_EQ(f.sink_tokens, 0);
  EXPECT_EQ(Format("4bit_nc:sink=8", 6, 64).sink_tokens, 8);
  EXPECT_EQ(Format("turboquant_k8v4", 6, 64).name, "k8v4:sink=0,boundary=2");
  EXPECT_EQ(Format("fp8:boundary=1", 4, 64).keys[0]->BytesPerVector(64), 128);
  for (const char* bad : {"int3", "turbo5", "turboquant_turbo3", "bf16:sink=4", "4bit_nc:qjl=1", "turbo3:qjl=2",
                          "turbo3:sink=-1", "turbo3:sinks=4", "turbo3:sink", "turbo3:boundary=x"}) {
    auto s = MakeKvCacheFormat(bad, 6, 64);
    EXPECT_FALSE(s.ok()) << bad;
    EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  auto unknown = MakeKvCacheFormat("int3", 6, 64);
  EXPECT_NE(unknown.status().message().find("fp32, bf16, fp8, k8v4, 4bit_nc"), std::string::npos)
      << unknown.status();
  auto head = MakeKvCacheFormat("turbo3", 6, 40);
  EXPECT_NE(head.status().message().find("head_dim 40"), std::string::npos) << head.status();
}

TEST(KvCacheFormatTest, DescribeListsLayersAndSinks) {
  const std::string s = Format("k3v4_nc", 6, 64).Describe();
  EXPECT_NE(s.find("layers 0-1,4-5: K bf16 128 B + V bf16 128 B"), std::string::npos) << s;
  EXPECT_NE(s.find("layers 2-3: K lloyd-max 3b hadamard 26 B + V uniform 4b 36 B"), std::string::npos) << s;
  EXPECT_NE(Format("turbo3", 12, 64).Describe().find("first 4 positions of each sequence bf16"), std::string::npos);
}

// MLA (ALGORITHMS.md §4.2): the latent c in the preset's value codec, k_pe passed through.
TEST(KvCacheFormatTest, MlaLatentAndRopeKeys) {
  auto f = MakeMlaKvCacheFormat("turbo3", 4, 128, 32);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->name, "turbo3:qjl=0,sink=4,boundary=5");
  EXPECT_EQ(f->head_dim, 32);
  EXPECT_EQ(f->value_dim(), 128);
  EXPECT_EQ(f->sink_tokens, 4);
  for (int l = 0; l < 4; ++l) {
    EXPECT_EQ(std::string(f->keys[l]->name()), "bf16");
    EXPECT_EQ(f->values[l]->BytesPerVector(128), 128 * 3 / 8 + 4);  // boundary layers change keys only
    ASSERT_NE(f->values[l]->mse_quantizer(), nullptr);
  }
  EXPECT_EQ(f->BytesPerTokenPerHead(), 4 * (2 * 32 + 52));
  EXPECT_NE(f->Describe().find("keys of 32, values of 128 floats"), std::string::npos) << f->Describe();
  // fp32 keeps k_pe in fp32; a vLLM preset's boundary layers store the latent in bf16.
  auto fp32 = MakeMlaKvCacheFormat("fp32", 2, 512, 64);
  ASSERT_TRUE(fp32.ok());
  EXPECT_EQ(fp32->BytesPerTokenPerHead(), 2 * 4 * (512 + 64));
  auto vllm = MakeMlaKvCacheFormat("k3v4_nc", 6, 512, 64);
  ASSERT_TRUE(vllm.ok());
  EXPECT_EQ(std::string(vllm->values[0]->name()), "bf16");
  EXPECT_NE(std::string(vllm->values[3]->name()), "bf16");
  EXPECT_EQ(std::string(vllm->keys[3]->name()), "bf16");
  // QJL compresses keys; there are none to compress. Widths the latent codec cannot take.
  EXPECT_EQ(MakeMlaKvCacheFormat("turbo3:qjl=1", 4, 512, 64).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeMlaKvCacheFormat("turbo3", 4, 100, 64).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(MakeMlaKvCacheFormat("turbo3", 4, 512, 0).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(MakeMlaKvCacheFormat("fp8", 4, 100, 30).ok());
}

TEST(KvCodecTest, SingleCodecsAndMiddleLayerCodecs) {
  for (const char* name : {"fp32", "bf16", "fp8"}) EXPECT_TRUE(MakeKvCodec(name).ok()) << name;
  auto preset = MakeKvCodec("turbo3");
  ASSERT_FALSE(preset.ok());
  EXPECT_NE(preset.status().message().find("MakeKvCacheFormat"), std::string::npos);
  auto k = MakeKvCodec("turbo3", KvRole::kKey, 128);
  ASSERT_TRUE(k.ok()) << k.status();
  EXPECT_EQ((*k)->BytesPerVector(128), 52);
  auto v = MakeKvCodec("k8v4", KvRole::kValue, 128);
  ASSERT_TRUE(v.ok());
  EXPECT_EQ((*v)->BytesPerVector(128), 68);
  auto q = MakeKvCodec("turbo3:qjl=1", KvRole::kKey, 128);
  ASSERT_TRUE(q.ok());
  EXPECT_EQ((*q)->BytesPerVector(128), 56);
}

// The quantizer behind the rotated Lloyd–Max codecs (what a GPU backend reads): the plugin's
// PolarQuant with its fp32 corrected gain (8-bit keys on boundary layers), vLLM's keys with an
// fp16 norm corrected at decode; none for bf16, uniform values or QJL keys.
TEST(KvCodecTest, MseQuantizerOfRotatedCodecs) {
  const KvCacheFormat f = Format("turbo3", 12, 128);
  ASSERT_NE(f.keys[0]->mse_quantizer(), nullptr);
  EXPECT_EQ(f.keys[0]->mse_quantizer()->spec().bits, 8);  // boundary layer
  ASSERT_NE(f.keys[6]->mse_quantizer(), nullptr);
  EXPECT_EQ(f.keys[6]->mse_quantizer()->spec().bits, 3);
  EXPECT_EQ(f.keys[6]->mse_quantizer()->spec().gain, quant::KvGain::kNormCorrected);
  EXPECT_EQ(f.keys[6]->mse_quantizer()->bytes(), f.keys[6]->BytesPerVector(128));
  EXPECT_EQ(f.values[6]->mse_quantizer()->spec().seed, quant::kKvValueSeed);
  EXPECT_EQ(f.sink->mse_quantizer(), nullptr);
  const KvCacheFormat v = Format("k3v4_nc", 6, 64);
  ASSERT_NE(v.keys[3]->mse_quantizer(), nullptr);
  EXPECT_EQ(v.keys[3]->mse_quantizer()->spec().gain, quant::KvGain::kNormCorrectedAtDecode);
  EXPECT_EQ(v.values[3]->mse_quantizer(), nullptr);  // uniform
  EXPECT_EQ(v.keys[0]->mse_quantizer(), nullptr);    // bf16 boundary layer
  EXPECT_EQ(Format("turbo3:qjl=1", 12, 128).keys[6]->mse_quantizer(), nullptr);
}

// The contract attention relies on, for the codecs of every layer of every preset (boundary
// and sink codecs included): PrepareQuery/DecodeAttention give q·Decode(code), FinishValue of
// the attention-space sum gives the sum of decoded values, ToAttention maps exact vectors.
TEST(KvCodecTest, AttentionSpaceContract) {
  std::mt19937 rng(5);
  std::normal_distribution<float> nd;
  const int d = 64;
  for (std::string spec : KvCodecNames()) {
    for (const std::string& s : {spec, spec + ":qjl=1"}) {
      auto f = MakeKvCacheFormat(s, 12, d);
      if (!f.ok()) continue;  // qjl on a preset without it
      std::vector<std::shared_ptr<const KvCodec>> codecs = {f->keys[0], f->keys[6], f->values[0], f->values[6]};
      if (f->sink) codecs.push_back(f->sink);
      for (size_t ci = 0; ci < codecs.size(); ++ci) {
        const KvCodec& c = *codecs[ci];
        const bool is_key = ci < 2 || ci == 4;
        const int ad = c.AttentionDim(d);
        if (!is_key) {
          ASSERT_EQ(ad, d) << s;
        }
        std::vector<float> x(d), q(d), xh(d), xa(ad), qa(ad), exact(ad);
        std::vector<uint8_t> code(c.BytesPerVector(d));
        for (int i = 0; i < d; ++i) {
          x[i] = nd(rng);
          q[i] = nd(rng);
        }
        c.Encode(x.data(), d, code.data());
        c.Decode(code.data(), d, xh.data());
        c.DecodeAttention(code.data(), d, xa.data());
        if (is_key) {
          c.PrepareQuery(q.data(), d, qa.data());
          double got = 0, want = 0, ex = 0, ex_want = 0;
          c.ToAttention(x.data(), d, exact.data());
          for (int i = 0; i < ad; ++i) {
            got += static_cast<double>(qa[i]) * xa[i];
            ex += static_cast<double>(qa[i]) * exact[i];
          }
          for (int i = 0; i < d; ++i) {
            want += static_cast<double>(q[i]) * xh[i];
            ex_want += static_cast<double>(q[i]) * x[i];
          }
          EXPECT_NEAR(got, want, 1e-4 * d) << s << " " << c.name();
          EXPECT_NEAR(ex, ex_want, 1e-4 * d) << s << " " << c.name();
        } else {
          std::vector<float> back(d);
          c.FinishValue(xa.data(), d, back.data());
          for (int i = 0; i < d; ++i) ASSERT_NEAR(back[i], xh[i], 1e-5) << s << " " << c.name();
          c.ToAttention(x.data(), d, xa.data());
          c.FinishValue(xa.data(), d, back.data());
          for (int i = 0; i < d; ++i) ASSERT_NEAR(back[i], x[i], 1e-5) << s << " " << c.name();
        }
      }
    }
  }
}

}  // namespace
}  // namespace tq
