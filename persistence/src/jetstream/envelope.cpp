#include "jetstream/envelope.hpp"

#include <cstring>

#include "annals/persistence/jetstream_journal.hpp"

namespace annals::persistence {

std::string subject_token(std::string_view persistence_id) {
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string out;
  out.reserve(persistence_id.size());
  for (unsigned char c : persistence_id) {
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_'
        || c == '-') {
      out += static_cast<char>(c);
    } else {
      out += '=';
      out += hex[c >> 4];
      out += hex[c & 0xF];
    }
  }
  return out;
}

std::optional<std::string> persistence_id_of(std::string_view token) {
  auto digit = [](char c) -> int {
    if (c >= '0' && c <= '9')
      return c - '0';
    if (c >= 'A' && c <= 'F')
      return c - 'A' + 10;
    return -1;
  };
  std::string out;
  for (std::size_t i = 0; i < token.size(); ++i) {
    if (token[i] != '=') {
      out += token[i];
      continue;
    }
    if (i + 2 >= token.size())
      return std::nullopt;
    int hi = digit(token[i + 1]);
    int lo = digit(token[i + 2]);
    if (hi < 0 || lo < 0)
      return std::nullopt;
    out += static_cast<char>(hi * 16 + lo);
    i += 2;
  }
  // Only the canonical form is a token: re-encoding must give it back.
  if (subject_token(out) != token)
    return std::nullopt;
  return out;
}

} // namespace annals::persistence

namespace annals::persistence::jetstream {

namespace {

constexpr std::string_view envelope_magic = "ANJ1";
constexpr std::string_view snapshot_magic = "ANS1";

template <class T>
void put_int(std::string& out, T v) {
  auto u = static_cast<std::make_unsigned_t<T>>(v);
  for (std::size_t i = 0; i < sizeof(T); ++i)
    out += static_cast<char>((u >> (8 * i)) & 0xFF);
}

void put_str(std::string& out, std::string_view s) {
  put_int(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}

/// Reads fields from a buffer; any read past the end sets `bad`.
struct reader {
  std::string_view in;
  bool bad = false;

  template <class T>
  T get_int() {
    if (in.size() < sizeof(T)) {
      bad = true;
      return T{};
    }
    std::make_unsigned_t<T> u = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i)
      u |= static_cast<std::make_unsigned_t<T>>(static_cast<unsigned char>(in[i])) << (8 * i);
    in.remove_prefix(sizeof(T));
    return static_cast<T>(u);
  }
  std::string get_str() {
    auto n = get_int<std::uint32_t>();
    if (bad || in.size() < n) {
      bad = true;
      return {};
    }
    std::string s{in.substr(0, n)};
    in.remove_prefix(n);
    return s;
  }
  bool magic(std::string_view m) {
    if (in.substr(0, m.size()) != m) {
      bad = true;
      return false;
    }
    in.remove_prefix(m.size());
    return true;
  }
};

} // namespace

std::string encode(const envelope& env) {
  std::string out;
  out.reserve(64 + env.persistence_id.size() + env.events.size() * 32);
  out.append(envelope_magic);
  put_int(out, env.first_seq);
  put_int(out, env.timestamp_us);
  put_str(out, env.persistence_id);
  put_str(out, env.metadata.command_id);
  put_str(out, env.metadata.correlation_id);
  put_int(out, static_cast<std::uint32_t>(env.events.size()));
  for (const auto& ev : env.events) {
    put_str(out, ev.name);
    put_int(out, ev.version);
    put_str(out, ev.payload);
    put_int(out, static_cast<std::uint32_t>(ev.tags.size()));
    for (const auto& tag : ev.tags)
      put_str(out, tag);
  }
  out.append(reinterpret_cast<const char*>(env.hash.data()), env.hash.size());
  return out;
}

caf::expected<envelope> decode_envelope(std::string_view bytes, const std::string& where) {
  reader r{bytes};
  envelope env;
  auto fail = [&](const char* what) {
    return make_error(journal_errc::corrupt_row, "the JetStream message at " + where
                                                   + " is not an annals append (" + what + ")");
  };
  if (!r.magic(envelope_magic))
    return fail("no ANJ1 header");
  env.first_seq = r.get_int<std::uint64_t>();
  env.timestamp_us = r.get_int<std::int64_t>();
  env.persistence_id = r.get_str();
  env.metadata.command_id = r.get_str();
  env.metadata.correlation_id = r.get_str();
  auto n = r.get_int<std::uint32_t>();
  if (r.bad || n == 0 || n > r.in.size())
    return fail("bad event count");
  env.events.resize(n);
  for (auto& ev : env.events) {
    ev.name = r.get_str();
    ev.version = r.get_int<std::uint32_t>();
    ev.payload = r.get_str();
    auto k = r.get_int<std::uint32_t>();
    if (r.bad || k > r.in.size())
      return fail("bad tag count");
    ev.tags.resize(k);
    for (auto& tag : ev.tags)
      tag = r.get_str();
  }
  if (r.bad || r.in.size() != env.hash.size() || env.first_seq == 0)
    return fail("truncated or trailing bytes");
  std::memcpy(env.hash.data(), r.in.data(), env.hash.size());
  return env;
}

event_hash chain(const event_hash& previous, const envelope& env) {
  auto h = previous;
  auto seq = env.first_seq;
  for (const auto& ev : env.events)
    h = internal::chain_hash(h, 0, env.persistence_id, seq++, ev.name, ev.version, ev.payload,
                             ev.tags, env.timestamp_us, env.metadata.command_id,
                             env.metadata.correlation_id);
  return h;
}

std::vector<event_record> records_of(envelope env, std::uint64_t stream_seq) {
  std::vector<event_record> out;
  out.reserve(env.events.size());
  auto offset = stream_seq * jetstream_journal::offsets_per_append;
  auto seq = env.first_seq;
  for (auto& ev : env.events) {
    out.push_back(event_record{offset++, env.persistence_id, seq++, std::move(ev.name), ev.version,
                               std::move(ev.payload), std::move(ev.tags), env.timestamp_us,
                               env.metadata});
  }
  return out;
}

std::string encode(const snapshot_record& snap) {
  std::string out;
  out.append(snapshot_magic);
  put_int(out, snap.seq);
  put_int(out, snap.version);
  put_int(out, snap.timestamp_us);
  put_str(out, snap.persistence_id);
  put_str(out, snap.name);
  put_str(out, snap.payload);
  return out;
}

caf::expected<snapshot_record> decode_snapshot(std::string_view bytes, const std::string& where) {
  reader r{bytes};
  snapshot_record snap;
  r.magic(snapshot_magic);
  snap.seq = r.get_int<std::uint64_t>();
  snap.version = r.get_int<std::uint32_t>();
  snap.timestamp_us = r.get_int<std::int64_t>();
  snap.persistence_id = r.get_str();
  snap.name = r.get_str();
  snap.payload = r.get_str();
  if (r.bad || !r.in.empty())
    return make_error(journal_errc::corrupt_row,
                      "the JetStream message at " + where + " is not an annals snapshot");
  return snap;
}

std::string subjects::events(std::string_view persistence_id) const {
  return stream + ".e." + subject_token(persistence_id);
}

std::string subjects::snapshots(std::string_view persistence_id) const {
  return stream + ".s." + subject_token(persistence_id);
}

} // namespace annals::persistence::jetstream
