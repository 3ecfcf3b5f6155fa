#include "annals/persistence/audit.hpp"

#include <memory>
#include <stdexcept>

#include <openssl/evp.h>

namespace annals::persistence {

namespace internal {

namespace {

struct digest_context {
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  ~digest_context() {
    EVP_MD_CTX_free(ctx);
  }
};

void put_u64(EVP_MD_CTX* ctx, std::uint64_t v) {
  unsigned char buf[8];
  for (int i = 7; i >= 0; --i) {
    buf[i] = static_cast<unsigned char>(v & 0xff);
    v >>= 8;
  }
  EVP_DigestUpdate(ctx, buf, sizeof buf);
}

// Length first, so that no two different field lists encode to the same bytes.
void put_text(EVP_MD_CTX* ctx, std::string_view s) {
  put_u64(ctx, s.size());
  EVP_DigestUpdate(ctx, s.data(), s.size());
}

} // namespace

event_hash chain_hash(const event_hash& previous, std::uint64_t offset,
                      std::string_view persistence_id, std::uint64_t seq, std::string_view name,
                      std::uint32_t version, std::string_view payload,
                      const std::vector<std::string>& tags, std::int64_t timestamp_us,
                      std::string_view command_id, std::string_view correlation_id) {
  thread_local digest_context dc;
  if (dc.ctx == nullptr || EVP_DigestInit_ex(dc.ctx, EVP_sha256(), nullptr) != 1)
    throw std::runtime_error{"annals: SHA-256 is not available from libcrypto"};
  auto* ctx = dc.ctx;
  EVP_DigestUpdate(ctx, previous.data(), previous.size());
  put_u64(ctx, offset);
  put_text(ctx, persistence_id);
  put_u64(ctx, seq);
  put_text(ctx, name);
  put_u64(ctx, version);
  put_text(ctx, payload);
  put_u64(ctx, tags.size());
  for (const auto& t : tags)
    put_text(ctx, t);
  put_u64(ctx, static_cast<std::uint64_t>(timestamp_us));
  put_text(ctx, command_id);
  put_text(ctx, correlation_id);
  event_hash out{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(ctx, out.data(), &len);
  return out;
}

} // namespace internal

event_hash chain_hash(const event_hash& previous, const event_record& rec) {
  return internal::chain_hash(previous, rec.offset, rec.persistence_id, rec.seq, rec.name,
                              rec.version, rec.payload, rec.tags, rec.timestamp_us,
                              rec.metadata.command_id, rec.metadata.correlation_id);
}

std::string to_hex(const event_hash& h) {
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  out.reserve(h.size() * 2);
  for (auto b : h) {
    out += digits[b >> 4];
    out += digits[b & 0xf];
  }
  return out;
}

std::optional<event_hash> hash_from_hex(std::string_view hex) {
  if (hex.size() != 64)
    return std::nullopt;
  auto nibble = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'a' && c <= 'f')
      return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  };
  event_hash out{};
  for (std::size_t i = 0; i < out.size(); ++i) {
    auto hi = nibble(hex[2 * i]);
    auto lo = nibble(hex[2 * i + 1]);
    if (hi < 0 || lo < 0)
      return std::nullopt;
    out[i] = static_cast<std::uint8_t>((hi << 4) | lo);
  }
  return out;
}

} // namespace annals::persistence
