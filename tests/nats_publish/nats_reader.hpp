#pragma once

// The consumer's side of the NATS publisher tests: a plain libnats connection that reads a
// stream's messages back by sequence (subject, headers, body), the stream's state, and a
// core subscription that collects what arrives. Failures throw std::runtime_error.

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include <nats/nats.h>

namespace nats_test {

/// One message as a consumer sees it.
struct received {
  std::uint64_t seq = 0; ///< stream sequence (0 for a core message)
  std::string subject;
  std::string body;
  std::map<std::string, std::string> headers; ///< the ones the publisher sets
};

/// The state of a stream.
struct stream_state {
  std::uint64_t messages = 0;
  std::uint64_t last_seq = 0;
  std::int64_t created = 0;
  std::string subject; ///< its first subject
  int replicas = 0;
};

inline void check(natsStatus s, const std::string& what) {
  if (s != NATS_OK)
    throw std::runtime_error{what + ": " + natsStatus_GetText(s)};
}

inline received to_received(natsMsg* m, std::uint64_t seq) {
  received r;
  r.seq = seq;
  r.subject = natsMsg_GetSubject(m);
  r.body.assign(natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m)));
  for (const char* key : {"Nats-Msg-Id", "Annals-Position", "Annals-Type", "Annals-Version"}) {
    const char* v = nullptr;
    if (natsMsgHeader_Get(m, key, &v) == NATS_OK && v != nullptr)
      r.headers[key] = v;
  }
  return r;
}

/// A connection to `url` for reading what the publisher sent.
class reader {
public:
  explicit reader(const std::string& url) {
    check(natsConnection_ConnectTo(&nc_, url.c_str()), "connecting to " + url);
    check(natsConnection_JetStream(&js_, nc_, nullptr), "JetStream context");
  }
  ~reader() {
    if (sub_ != nullptr)
      natsSubscription_Destroy(sub_);
    jsCtx_Destroy(js_);
    natsConnection_Destroy(nc_);
  }
  reader(const reader&) = delete;
  reader& operator=(const reader&) = delete;

  stream_state state(const std::string& stream) {
    jsStreamInfo* si = nullptr;
    check(js_GetStreamInfo(&si, js_, stream.c_str(), nullptr, nullptr), "stream info " + stream);
    stream_state st{si->State.Msgs, si->State.LastSeq, si->Created,
                    si->Config->SubjectsLen > 0 ? si->Config->Subjects[0] : "",
                    static_cast<int>(si->Config->Replicas)};
    jsStreamInfo_Destroy(si);
    return st;
  }

  /// Every message of `stream`, by sequence.
  std::vector<received> all(const std::string& stream) {
    std::vector<received> out;
    auto last = state(stream).last_seq;
    for (std::uint64_t seq = 1; seq <= last; ++seq) {
      natsMsg* m = nullptr;
      check(js_GetMsg(&m, js_, stream.c_str(), seq, nullptr, nullptr),
            "message " + std::to_string(seq) + " of " + stream);
      out.push_back(to_received(m, seq));
      natsMsg_Destroy(m);
    }
    return out;
  }

  /// Starts collecting core messages on `subject` (wildcards allowed).
  void subscribe(const std::string& subject) {
    check(natsConnection_SubscribeSync(&sub_, nc_, subject.c_str()), "subscribing " + subject);
    check(natsConnection_Flush(nc_), "flush");
  }

  /// The next core message, or nothing within `bound`.
  std::optional<received> next(std::chrono::milliseconds bound) {
    natsMsg* m = nullptr;
    if (natsSubscription_NextMsg(&m, sub_, bound.count()) != NATS_OK)
      return std::nullopt;
    auto r = to_received(m, 0);
    natsMsg_Destroy(m);
    return r;
  }

private:
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  natsSubscription* sub_ = nullptr;
};

} // namespace nats_test
