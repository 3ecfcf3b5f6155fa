// The publishing sink into NATS (annals/actors/nats_publisher.hpp says what it promises):
// one connection, a JetStream context whose asynchronous-publish acknowledgements land in
// `on_ack`, and a retry loop that resends from the first message not acknowledged.

#include "annals/actors/nats_publisher.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include <nats/nats.h>

#include "annals/actors/offset_store.hpp"
#include "annals/error.hpp"

namespace annals::actors {

namespace {

using clock = std::chrono::steady_clock;

caf::error config_error(std::string text) {
  return make_error(projection_errc::read_model_failed, std::move(text));
}

std::string status_text(natsStatus s) {
  std::string text = natsStatus_GetText(s);
  natsStatus last_status = NATS_OK;
  const char* last = nats_GetLastError(&last_status);
  if (last_status == s && last != nullptr && *last != '\0' && text != last)
    text += std::string{" ("} + last + ")";
  return text;
}

// A stream name holds no `.`, `*`, `>`, whitespace or path separators.
std::string stream_name_of(std::string_view source) {
  std::string out{source};
  for (auto& c : out)
    if (c == '.' || c == '*' || c == '>' || c == ' ' || c == '\t' || c == '/' || c == '\\')
      c = '_';
  return out + "_public";
}

std::vector<std::string> split_servers(std::string_view servers) {
  std::vector<std::string> out;
  while (!servers.empty()) {
    auto comma = servers.find(',');
    auto one = servers.substr(0, comma);
    if (!one.empty())
      out.emplace_back(one);
    servers = comma == std::string_view::npos ? std::string_view{} : servers.substr(comma + 1);
  }
  return out;
}

struct msg_deleter {
  void operator()(natsMsg* m) const {
    natsMsg_Destroy(m);
  }
};
using msg_ptr = std::unique_ptr<natsMsg, msg_deleter>;

// What became of one message of the batch being published.
struct ack_result {
  enum class state : std::uint8_t { pending, stored, failed } st = state::pending;
  std::string error;
};

class nats_publisher final : public projection_sink {
public:
  nats_publisher(public_contract contract, nats_publisher_options opts,
                 std::shared_ptr<sqlite_offset_store> offsets, std::string offsets_path)
    : contract_(std::move(contract)), opts_(std::move(opts)), offsets_(std::move(offsets)),
      offsets_path_(std::move(offsets_path)) {
    if (opts_.subject_prefix.empty())
      opts_.subject_prefix = contract_.source() + ".public";
    if (opts_.stream.empty())
      opts_.stream = stream_name_of(contract_.source());
  }

  ~nats_publisher() override {
    disconnect();
  }

  caf::expected<std::uint64_t> open() override {
    auto stored = offsets_->load(opts_.name);
    if (!stored)
      return stored;
    auto deadline = clock::now() + std::max(opts_.retry_for, opts_.request_timeout);
    auto pause = std::chrono::milliseconds{50};
    for (;;) {
      auto err = connect();
      if (!err && opts_.mode == nats_publish_mode::jetstream)
        err = ensure_stream(deadline);
      if (!err)
        return *stored;
      if (clock::now() + pause > deadline)
        return err;
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds{1'000});
    }
  }

  batch_outcome apply(std::span<const persistence::event_record> batch,
                      std::uint64_t prev) override {
    batch_outcome out{prev, 0, {}};
    if (batch.empty())
      return out;
    if (auto stored = offsets_->load(opts_.name); !stored) {
      out.err = std::move(stored.error());
      return out;
    } else if (*stored != prev) {
      out.err = offset_moved_error(opts_.name, where(), prev, *stored);
      return out;
    }
    // Translate up to the first record that does not decode; what comes before it is
    // published and stored, then the projection stops with the contract's error.
    std::vector<published_message> msgs;
    std::size_t good = 0;
    caf::error contract_err;
    for (const auto& rec : batch) {
      auto msg = contract_.translate(rec);
      if (!msg) {
        contract_err = std::move(msg.error());
        break;
      }
      if (*msg)
        msgs.push_back(std::move(**msg));
      ++good;
    }
    if (good > 0) {
      if (auto err = publish(msgs)) {
        out.err = std::move(err);
        return out;
      }
      auto last = batch[good - 1].offset;
      if (opts_.before_offset_stored)
        opts_.before_offset_stored(last);
      if (auto err = offsets_->advance(opts_.name, prev, last)) {
        out.err = std::move(err);
        return out;
      }
      out.last_good = last;
      out.applied = good;
    }
    out.err = std::move(contract_err);
    return out;
  }

  caf::error reset() override {
    return offsets_->save(opts_.name, 0);
  }

  delivery guarantee() const noexcept override {
    return delivery::at_least_once;
  }

private:
  std::string where() const {
    return "table projection_offsets of " + offsets_path_;
  }

  std::string prefix() const {
    return "projection '" + opts_.name + "': ";
  }

  caf::error nats_failure(const std::string& what, natsStatus s, jsErrCode code = {}) const {
    auto text = prefix() + what + " on " + opts_.servers + ": " + status_text(s);
    if (code != 0)
      text += " (JetStream error " + std::to_string(static_cast<int>(code)) + ")";
    return config_error(std::move(text));
  }

  void disconnect() {
    if (js_ != nullptr) {
      jsCtx_Destroy(js_);
      js_ = nullptr;
    }
    if (nc_ != nullptr) {
      natsConnection_Close(nc_);
      natsConnection_Destroy(nc_);
      nc_ = nullptr;
    }
  }

  caf::error connect() {
    if (nc_ != nullptr)
      return {};
    auto urls = split_servers(opts_.servers);
    std::vector<const char*> curls;
    for (auto& u : urls)
      curls.push_back(u.c_str());
    natsOptions* o = nullptr;
    if (auto s = natsOptions_Create(&o); s != NATS_OK)
      return nats_failure("creating NATS options", s);
    natsOptions_SetServers(o, curls.data(), static_cast<int>(curls.size()));
    natsOptions_SetMaxReconnect(o, -1);
    natsOptions_SetReconnectWait(o, 100);
    natsOptions_SetTimeout(o, std::min<std::int64_t>(opts_.request_timeout.count(), 1'000));
    // Nothing is buffered while reconnecting: a publish then fails at once and is retried
    // by `publish`, instead of being sent later behind its back.
    natsOptions_SetReconnectBufSize(o, 1);
    natsOptions_SetSendAsap(o, true);
    natsOptions_SetDisconnectedCB(o, &nats_publisher::on_disconnect, this);
    auto s = natsConnection_Connect(&nc_, o);
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
      nc_ = nullptr;
      return nats_failure("connecting", s);
    }
    if (opts_.mode == nats_publish_mode::core)
      return {};
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = opts_.request_timeout.count();
    jo.PublishAsync.MaxPending =
      static_cast<int64_t>(std::max<std::size_t>(opts_.max_in_flight, 1));
    jo.PublishAsync.AckHandler = &nats_publisher::on_ack;
    jo.PublishAsync.AckHandlerClosure = this;
    jo.PublishAsync.StallWait = opts_.request_timeout.count();
    if (auto st = natsConnection_JetStream(&js_, nc_, &jo); st != NATS_OK) {
      js_ = nullptr;
      auto err = nats_failure("creating a JetStream context", st);
      disconnect();
      return err;
    }
    return {};
  }

  // Finds the stream or creates it; a replicated one is waited on until it has a leader.
  caf::error ensure_stream(clock::time_point deadline) {
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = opts_.request_timeout.count();
    jsStreamInfo* si = nullptr;
    jsErrCode code{};
    auto s = js_GetStreamInfo(&si, js_, opts_.stream.c_str(), &jo, &code);
    if (s != NATS_OK && s != NATS_NOT_FOUND && code != JSStreamNotFoundErr)
      return nats_failure("looking up JetStream stream " + opts_.stream, s, code);
    if (s != NATS_OK) {
      auto subjects = opts_.subject_prefix + ".>";
      const char* subj = subjects.c_str();
      jsStreamConfig cfg;
      jsStreamConfig_Init(&cfg);
      cfg.Name = opts_.stream.c_str();
      cfg.Subjects = &subj;
      cfg.SubjectsLen = 1;
      cfg.Storage = js_FileStorage;
      cfg.Retention = js_LimitsPolicy;
      cfg.Replicas = opts_.replicas;
      cfg.Duplicates = static_cast<int64_t>(opts_.duplicate_window.count()) * 1'000'000;
      code = jsErrCode{};
      si = nullptr;
      s = js_AddStream(&si, js_, &cfg, &jo, &code);
      if (s != NATS_OK)
        return nats_failure("creating JetStream stream " + opts_.stream, s, code);
    }
    jsStreamInfo_Destroy(si);
    for (;;) {
      si = nullptr;
      code = jsErrCode{};
      s = js_GetStreamInfo(&si, js_, opts_.stream.c_str(), &jo, &code);
      bool led =
        s == NATS_OK
        && (si->Cluster == nullptr || (si->Cluster->Leader != nullptr && *si->Cluster->Leader));
      jsStreamInfo_Destroy(si);
      if (led)
        return {};
      if (clock::now() >= deadline)
        return config_error(prefix() + "JetStream stream " + opts_.stream + " has no leader");
      std::this_thread::sleep_for(std::chrono::milliseconds{50});
    }
  }

  // Publishes `msgs` until every one is acknowledged (or flushed), retrying from the first
  // one that is not for up to `retry_for`.
  caf::error publish(const std::vector<published_message>& msgs) {
    if (msgs.empty())
      return {};
    std::vector<std::string> subjects;
    subjects.reserve(msgs.size());
    for (const auto& m : msgs)
      subjects.push_back(nats_subject(opts_.subject_prefix, m.type));
    auto deadline = clock::now() + opts_.retry_for;
    auto pause = std::chrono::milliseconds{50};
    std::size_t first = 0;
    for (;;) {
      std::optional<std::pair<std::size_t, std::string>> failed;
      if (auto err = connect())
        failed = std::pair{first, render(err)};
      else if (natsConnection_Status(nc_) != NATS_CONN_STATUS_CONNECTED)
        // A publish while reconnecting can block for the whole request timeout.
        failed = std::pair{first, std::string{"not connected (reconnecting)"}};
      else if (opts_.mode == nats_publish_mode::core)
        failed = publish_core(msgs, subjects, first);
      else
        failed = publish_jetstream(msgs, subjects, first);
      if (!failed)
        return {};
      first = failed->first;
      if (opts_.on_publish_failed)
        opts_.on_publish_failed(msgs[first].id, subjects[first], failed->second);
      if (clock::now() + pause > deadline)
        return config_error(prefix() + "publishing message " + msgs[first].id + " to subject "
                            + subjects[first] + " failed: " + failed->second + "; gave up after "
                            + std::to_string(opts_.retry_for.count()) + " ms");
      std::this_thread::sleep_for(pause);
      pause = std::min(pause * 2, std::chrono::milliseconds{1'000});
    }
  }

  caf::expected<msg_ptr> make_message(const published_message& m, const std::string& subject) {
    natsMsg* raw = nullptr;
    auto body = to_json(m);
    auto s =
      natsMsg_Create(&raw, subject.c_str(), nullptr, body.data(), static_cast<int>(body.size()));
    msg_ptr msg{raw};
    auto position = std::to_string(m.position);
    auto version = std::to_string(m.version);
    if (s == NATS_OK)
      s = natsMsgHeader_Set(msg.get(), "Nats-Msg-Id", m.id.c_str());
    if (s == NATS_OK)
      s = natsMsgHeader_Set(msg.get(), "Annals-Position", position.c_str());
    if (s == NATS_OK)
      s = natsMsgHeader_Set(msg.get(), "Annals-Type", m.type.c_str());
    if (s == NATS_OK)
      s = natsMsgHeader_Set(msg.get(), "Annals-Version", version.c_str());
    if (s != NATS_OK)
      return config_error(status_text(s));
    return msg;
  }

  // Core mode: every message from `first` on, then a flush. Returns the first message not
  // known to have reached the server, and why.
  std::optional<std::pair<std::size_t, std::string>>
  publish_core(const std::vector<published_message>& msgs, const std::vector<std::string>& subjects,
               std::size_t first) {
    for (auto i = first; i < msgs.size(); ++i) {
      auto msg = make_message(msgs[i], subjects[i]);
      if (!msg)
        return std::pair{first, render(msg.error())};
      if (auto s = natsConnection_PublishMsg(nc_, msg->get()); s != NATS_OK)
        return std::pair{first, status_text(s)};
    }
    if (auto s = natsConnection_FlushTimeout(nc_, opts_.request_timeout.count()); s != NATS_OK)
      return std::pair{first, "flush: " + status_text(s)};
    return std::nullopt;
  }

  // JetStream mode: asynchronous publishes from `first` on, then a bounded wait for their
  // acknowledgements.
  std::optional<std::pair<std::size_t, std::string>>
  publish_jetstream(const std::vector<published_message>& msgs,
                    const std::vector<std::string>& subjects, std::size_t first) {
    {
      std::lock_guard guard{mtx_};
      results_.assign(msgs.size(), ack_result{});
      for (std::size_t i = 0; i < first; ++i)
        results_[i].st = ack_result::state::stored;
      index_.clear();
      for (std::size_t i = first; i < msgs.size(); ++i)
        index_[msgs[i].position] = i;
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = opts_.request_timeout.count();
    std::optional<std::pair<std::size_t, std::string>> send_failure;
    for (auto i = first; i < msgs.size(); ++i) {
      auto msg = make_message(msgs[i], subjects[i]);
      if (!msg) {
        send_failure = std::pair{i, render(msg.error())};
        break;
      }
      auto* raw = msg->release();
      if (auto s = js_PublishMsgAsync(js_, &raw, &po); s != NATS_OK) {
        natsMsg_Destroy(raw);
        send_failure = std::pair{i, status_text(s)};
        break;
      }
    }
    // Waits in slices: after a disconnect the acknowledgements of what was in flight never
    // come (the server may not have the messages), so the round ends at once and the retry
    // resends them; the server drops the ones it had by their ids.
    auto disconnects = disconnects_.load();
    auto wait_ms = opts_.request_timeout.count() + 1'000;
    auto wait_until = clock::now() + std::chrono::milliseconds{wait_ms};
    jsPubOptions wait;
    jsPubOptions_Init(&wait);
    wait.MaxWait = 50;
    natsStatus done = NATS_TIMEOUT;
    while (done != NATS_OK && clock::now() < wait_until && disconnects_.load() == disconnects)
      done = js_PublishAsyncComplete(js_, &wait);
    if (done != NATS_OK) {
      // Acknowledgements that come after this are dropped; those messages count as failed.
      natsMsgList pending;
      if (js_PublishAsyncGetPendingList(&pending, js_) == NATS_OK)
        natsMsgList_Destroy(&pending);
    }
    std::lock_guard guard{mtx_};
    for (auto i = first; i < msgs.size(); ++i) {
      auto& r = results_[i];
      if (r.st == ack_result::state::stored)
        continue;
      if (send_failure && send_failure->first <= i)
        return send_failure;
      return std::pair{i, r.st == ack_result::state::failed ? r.error
                          : disconnects_.load() != disconnects
                            ? "disconnected before the acknowledgement"
                            : "no acknowledgement within " + std::to_string(wait_ms) + " ms"};
    }
    return std::nullopt;
  }

  static void on_disconnect(natsConnection*, void* closure) {
    ++static_cast<nats_publisher*>(closure)->disconnects_;
  }

  static void on_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<nats_publisher*>(closure);
    const char* pos = nullptr;
    std::uint64_t position = 0;
    if (natsMsgHeader_Get(msg, "Annals-Position", &pos) == NATS_OK && pos != nullptr)
      std::from_chars(pos, pos + std::strlen(pos), position);
    natsMsg_Destroy(msg);
    bool duplicate = false;
    {
      std::lock_guard guard{self->mtx_};
      auto it = self->index_.find(position);
      if (it == self->index_.end())
        return;
      auto& r = self->results_[it->second];
      if (pa != nullptr) {
        r.st = ack_result::state::stored;
        duplicate = pa->Duplicate;
      } else {
        r.st = ack_result::state::failed;
        r.error = pae != nullptr ? status_text(pae->Err) : "no acknowledgement";
        if (pae != nullptr && pae->ErrCode != 0)
          r.error += " (JetStream error " + std::to_string(static_cast<int>(pae->ErrCode))
                     + (pae->ErrText != nullptr ? std::string{": "} + pae->ErrText : "") + ")";
        return;
      }
    }
    if (self->opts_.on_acknowledged)
      self->opts_.on_acknowledged(position, duplicate);
  }

  public_contract contract_;
  nats_publisher_options opts_;
  std::shared_ptr<sqlite_offset_store> offsets_;
  std::string offsets_path_;
  natsConnection* nc_ = nullptr;
  jsCtx* js_ = nullptr;
  std::atomic<std::uint64_t> disconnects_{0};
  std::mutex mtx_;
  std::vector<ack_result> results_;
  std::unordered_map<std::uint64_t, std::size_t> index_;
};

bool all_digits(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

} // namespace

std::string nats_subject(std::string_view prefix, std::string_view type) {
  std::string out{prefix};
  out += '.';
  out += type;
  return out;
}

caf::expected<std::shared_ptr<projection_sink>> make_nats_publisher(public_contract contract,
                                                                    nats_publisher_options opts) {
  if (opts.offsets_path.empty())
    return config_error("projection '" + opts.name
                        + "': the NATS publisher needs offsets_path (where its offset is kept)");
  if (opts.replicas < 1 || opts.replicas > 5)
    return config_error("projection '" + opts.name + "': replicas " + std::to_string(opts.replicas)
                        + " (JetStream keeps 1 to 5 copies)");
  if (split_servers(opts.servers).empty())
    return config_error("projection '" + opts.name + "': no NATS server given");
  auto path = opts.offsets_path;
  auto offsets = sqlite_offset_store::open({.path = path});
  if (!offsets)
    return std::move(offsets.error());
  return std::shared_ptr<projection_sink>{std::make_shared<nats_publisher>(
    std::move(contract), std::move(opts), *offsets, std::move(path))};
}

caf::expected<nats_publisher_options> parse_nats_publish_url(std::string_view url,
                                                             nats_publisher_options base) {
  auto bad = [&](const std::string& what) {
    return config_error("publish URL '" + std::string{url} + "': " + what
                        + " (expected nats://HOST:PORT[,HOST:PORT...]"
                          "[?stream=NAME&replicas=N&mode=core|jetstream])");
  };
  constexpr std::string_view scheme = "nats://";
  if (!url.starts_with(scheme))
    return bad("not a nats:// URL");
  auto rest = url.substr(scheme.size());
  auto q = rest.find('?');
  auto hosts = rest.substr(0, q);
  auto query = q == std::string_view::npos ? std::string_view{} : rest.substr(q + 1);
  std::string servers;
  for (auto& h : split_servers(hosts)) {
    std::string_view hv = h;
    if (hv.starts_with(scheme))
      hv.remove_prefix(scheme.size());
    auto colon = hv.rfind(':');
    if (colon == std::string_view::npos || colon == 0 || !all_digits(hv.substr(colon + 1)))
      return bad("server '" + h + "' is not HOST:PORT");
    servers += (servers.empty() ? "" : ",") + std::string{scheme} + std::string{hv};
  }
  if (servers.empty())
    return bad("no server");
  base.servers = std::move(servers);
  while (!query.empty()) {
    auto amp = query.find('&');
    auto kv = query.substr(0, amp);
    query = amp == std::string_view::npos ? std::string_view{} : query.substr(amp + 1);
    auto eq = kv.find('=');
    auto key = kv.substr(0, eq);
    auto value = eq == std::string_view::npos ? std::string_view{} : kv.substr(eq + 1);
    if (key == "stream" && !value.empty())
      base.stream = std::string{value};
    else if (key == "replicas" && all_digits(value) && value.size() == 1 && value[0] >= '1'
             && value[0] <= '5')
      base.replicas = value[0] - '0';
    else if (key == "mode" && value == "core")
      base.mode = nats_publish_mode::core;
    else if (key == "mode" && value == "jetstream")
      base.mode = nats_publish_mode::jetstream;
    else
      return bad("unknown or malformed parameter '" + std::string{kv} + "'");
  }
  return base;
}

} // namespace annals::actors
