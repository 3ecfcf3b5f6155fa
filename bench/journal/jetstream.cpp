// bench_journal, JetStream: `jetstream_journal` beside its ceiling, raw libnats async
// publishes (js_PublishMsgAsync with at most --in-flight outstanding) of messages shaped
// like the journal's: the same subjects (`STREAM.e.<subject token>`), envelope bodies of
// the same layout and size, and the same headers (Nats-Msg-Id,
// Nats-Expected-Last-Subject-Sequence, Nats-Expected-Stream) into a stream with the same
// settings. Both write fresh streams; the bench deletes them at the end.
//
// The raw publisher knows every expected sequence in advance: it is the only writer of its
// fresh stream, so message i gets stream sequence i + 1. The journal cannot know it (other
// writers may append): it learns the sequence of an id's last message from that message's
// acknowledgement, so the appends to one id go one round trip at a time.

#include <nats/nats.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "annals/persistence/jetstream_journal.hpp"

#include "journal.hpp"

namespace bench::journal_bench {

namespace {

// -- a connection of the bench's own ------------------------------------------------------

void check(natsStatus s, const std::string& what) {
  if (s != NATS_OK)
    die(what + ": " + natsStatus_GetText(s) + " " + nats_GetLastError(nullptr));
}

struct nats_client {
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;

  /// `send_asap`: every publish is written at once instead of by libnats' flusher thread
  /// (what the journal does; it pays when each publish waits for an acknowledgement).
  explicit nats_client(const std::string& servers, bool send_asap = false) {
    std::vector<std::string> urls;
    for (std::size_t pos = 0; pos <= servers.size();) {
      auto comma = std::min(servers.find(',', pos), servers.size());
      urls.push_back(servers.substr(pos, comma - pos));
      pos = comma + 1;
    }
    std::vector<const char*> curls;
    for (const auto& u : urls)
      curls.push_back(u.c_str());
    natsOptions* o = nullptr;
    check(natsOptions_Create(&o), "natsOptions_Create");
    natsOptions_SetServers(o, curls.data(), static_cast<int>(curls.size()));
    natsOptions_SetSendAsap(o, send_asap);
    auto s = natsConnection_Connect(&nc, o);
    natsOptions_Destroy(o);
    check(s, "connecting to " + servers);
    check(natsConnection_JetStream(&js, nc, nullptr), "natsConnection_JetStream");
  }
  ~nats_client() {
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
  }
  nats_client(const nats_client&) = delete;
  nats_client& operator=(const nats_client&) = delete;

  void delete_stream(const std::string& name) {
    jsErrCode code{};
    js_DeleteStream(js, name.c_str(), nullptr, &code); // absent: nothing to do
  }
};

/// Creates `name` (subjects `name.e.*`) with the journal's settings and waits (bounded)
/// until it has a leader.
void create_raw_stream(nats_client& c, const std::string& name, int replicas) {
  auto subject = name + ".e.*";
  const char* subj = subject.c_str();
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  cfg.Name = name.c_str();
  cfg.Subjects = &subj;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Retention = js_LimitsPolicy;
  cfg.Replicas = replicas;
  cfg.Duplicates = jetstream_options{}.duplicate_window.count() * 1'000'000;
  cfg.DenyDelete = true;
  cfg.DenyPurge = true;
  jsStreamInfo* si = nullptr;
  jsErrCode code{};
  check(js_AddStream(&si, c.js, &cfg, nullptr, &code), "creating stream " + name);
  jsStreamInfo_Destroy(si);
  auto deadline = clock_type::now() + std::chrono::seconds{30};
  while (clock_type::now() < deadline) {
    si = nullptr;
    if (js_GetStreamInfo(&si, c.js, name.c_str(), nullptr, &code) == NATS_OK) {
      bool led =
        si->Cluster == nullptr || (si->Cluster->Leader != nullptr && *si->Cluster->Leader != '\0');
      jsStreamInfo_Destroy(si);
      if (led)
        return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  }
  die("stream " + name + " has no leader after 30 s");
}

// -- the raw publisher --------------------------------------------------------------------

void put_u32(std::string& out, std::uint32_t v) {
  for (int i = 0; i < 4; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_u64(std::string& out, std::uint64_t v) {
  for (int i = 0; i < 8; ++i)
    out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

void put_str(std::string& out, std::string_view s) {
  put_u32(out, static_cast<std::uint32_t>(s.size()));
  out.append(s);
}

/// A message body in the journal's envelope layout (jetstream/envelope.hpp): one event,
/// no metadata, no tags, a zero hash; the same size as the journal's message for `r`.
std::string envelope_like(const row& r, std::int64_t timestamp_us) {
  std::string out = "ANJ1";
  put_u64(out, r.seq);
  put_u64(out, static_cast<std::uint64_t>(timestamp_us));
  put_str(out, r.persistence_id);
  put_str(out, "");
  put_str(out, "");
  put_u32(out, 1);
  put_str(out, "bench.deposited");
  put_u32(out, 1);
  put_str(out, r.payload);
  put_u32(out, 0);
  out.append(32, '\0');
  return out;
}

/// The payload inside an `envelope_like` body.
std::string_view payload_of(std::string_view body) {
  auto u32 = [&](std::size_t at) {
    std::uint32_t v = 0;
    for (int i = 0; i < 4; ++i)
      v |= static_cast<std::uint32_t>(
             static_cast<unsigned char>(body[at + static_cast<std::size_t>(i)]))
           << (8 * i);
    return static_cast<std::size_t>(v);
  };
  std::size_t at = 4 + 8 + 8;
  for (int i = 0; i < 3; ++i) // id, command id, correlation id
    at += 4 + u32(at);
  at += 4;           // event count
  at += 4 + u32(at); // name
  at += 4;           // version
  return body.substr(at + 4, u32(at));
}

/// The raw publisher's state, shared with libnats' acknowledgement callback.
struct raw_publisher {
  jsCtx* js = nullptr;
  std::string stream;
  std::string prefix; ///< Nats-Msg-Id is prefix + index
  std::vector<std::string> bodies;
  std::vector<std::string> subjects;
  std::vector<std::string> expected;
  /// Chained (a cluster): the number of ids; message i + ids (the same subject) goes out
  /// once i is acknowledged, with i's stream sequence as its expected one. 0: a window.
  std::size_t ids = 0;
  std::size_t next_first = 0;    ///< chained: the next subject's first message to send
  std::deque<std::size_t> ready; ///< chained: messages whose predecessor is acknowledged
  std::vector<clock_type::time_point> started;
  std::vector<double> latency_ms;
  std::mutex mtx;
  std::condition_variable cv;
  std::size_t acked = 0;
  std::uint64_t failed = 0;
  std::string first_error;

  void publish(std::size_t i) {
    natsMsg* m = nullptr;
    check(natsMsg_Create(&m, subjects[i].c_str(), nullptr, bodies[i].data(),
                         static_cast<int>(bodies[i].size())),
          "natsMsg_Create");
    auto id = prefix + std::to_string(i);
    natsMsgHeader_Set(m, "Nats-Msg-Id", id.c_str());
    natsMsgHeader_Set(m, "Nats-Expected-Last-Subject-Sequence", expected[i].c_str());
    natsMsgHeader_Set(m, "Nats-Expected-Stream", stream.c_str());
    started[i] = clock_type::now();
    auto s = js_PublishMsgAsync(js, &m, nullptr);
    if (s != NATS_OK) {
      natsMsg_Destroy(m);
      check(s, "js_PublishMsgAsync");
    }
  }
};

void on_raw_ack(jsCtx*, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
  auto* p = static_cast<raw_publisher*>(closure);
  const char* id = nullptr;
  std::size_t i = 0;
  if (natsMsgHeader_Get(msg, "Nats-Msg-Id", &id) == NATS_OK && id != nullptr)
    i = std::stoul(std::string{id + p->prefix.size()});
  p->latency_ms[i] =
    std::chrono::duration<double, std::milli>(clock_type::now() - p->started[i]).count();
  bool ok = pae == nullptr && pa != nullptr && !pa->Duplicate;
  std::string error;
  if (!ok)
    error = pae != nullptr
              ? "error " + std::to_string(pae->ErrCode) + ": " + (pae->ErrText ? pae->ErrText : "")
              : std::string{"acknowledged as a duplicate"};
  natsMsg_Destroy(msg);
  if (p->ids > 0) {
    // One acknowledgement, one publish: what is in flight stays at most the window.
    if (ok && i + p->ids < p->bodies.size()) {
      p->expected[i + p->ids] = std::to_string(pa->Sequence);
      p->ready.push_back(i + p->ids);
    }
    if (p->next_first < std::min(p->ids, p->bodies.size())) {
      p->publish(p->next_first++);
    } else if (!p->ready.empty()) {
      auto next = p->ready.front();
      p->ready.pop_front();
      p->publish(next);
    }
  }
  // Chained, a refused message's successors on its subject are never sent: they count as
  // refused too.
  std::size_t settled = 1;
  if (!ok && p->ids > 0)
    settled += (p->bodies.size() - 1 - i) / p->ids;
  std::lock_guard guard{p->mtx};
  if (!ok && p->failed == 0)
    p->first_error = error;
  if (!ok)
    p->failed += settled;
  p->acked += settled;
  if (p->acked == p->bodies.size())
    p->cv.notify_all();
}

/// Raw publishes of `rows` to a fresh stream. One server: a window of `in_flight`
/// publishes (libnats' MaxPending), each expecting the stream sequence its subject's
/// previous message will get (this publisher is the stream's only writer). A cluster: a
/// clustered stream in nats-server 2.9 checks Nats-Expected-Last-Subject-Sequence against
/// the messages it has applied, so a second publish to a subject sent before the first is
/// applied is refused (error 10071). There each subject's next message goes out when its
/// previous one is acknowledged, expecting the acknowledged sequence, with at most
/// `in_flight` outstanding; each publish is written at once, as the journal writes its own.
void run_raw_appends(const std::string& servers, const std::string& stream, int replicas,
                     std::size_t ids, const std::vector<row>& rows, std::size_t in_flight,
                     append_figures& out) {
  nats_client c{servers, replicas > 1};
  create_raw_stream(c, stream, replicas);
  auto n = rows.size();
  raw_publisher p;
  p.stream = stream;
  p.prefix = "raw-" + stream + "-";
  // Everything but the publishing itself is prepared before the clock starts.
  std::unordered_map<std::string, std::uint64_t> last; // subject -> stream seq of its last
  auto ts = std::chrono::duration_cast<std::chrono::microseconds>(
              std::chrono::system_clock::now().time_since_epoch())
              .count();
  for (std::size_t i = 0; i < n; ++i) {
    const auto& r = rows[i];
    p.bodies.push_back(envelope_like(r, ts));
    p.subjects.push_back(stream + ".e." + subject_token(r.persistence_id));
    auto& l = last[p.subjects.back()];
    p.expected.push_back(std::to_string(l));
    l = i + 1;
  }
  p.started.resize(n);
  p.latency_ms.resize(n);
  p.ids = replicas > 1 ? ids : 0;
  jsOptions jo;
  jsOptions_Init(&jo);
  // Ack-driven: the acknowledged message may still count as pending while its callback
  // publishes the next one; the chain bounds what is in flight.
  jo.PublishAsync.MaxPending = static_cast<int64_t>(p.ids > 0 ? 2 * in_flight : in_flight);
  jo.PublishAsync.AckHandler = &on_raw_ack;
  jo.PublishAsync.AckHandlerClosure = &p;
  jo.PublishAsync.StallWait = 60'000;
  check(natsConnection_JetStream(&p.js, c.nc, &jo), "natsConnection_JetStream");
  auto start = clock_type::now();
  if (p.ids > 0) {
    auto window = std::min({in_flight, ids, n});
    p.next_first = window; // before the first publish, so before any acknowledgement
    for (std::size_t i = 0; i < window; ++i)
      p.publish(i);
  } else {
    for (std::size_t i = 0; i < n; ++i)
      p.publish(i);
  }
  {
    std::unique_lock lk{p.mtx};
    if (!p.cv.wait_for(lk, std::chrono::seconds{120}, [&] { return p.acked == n; }))
      die("raw publishes to " + stream + ": not all acknowledged within 120 s");
  }
  auto elapsed = seconds_since(start);
  jsCtx_Destroy(p.js);
  out.baseline_events_per_s = static_cast<double>(n) / elapsed;
  out.baseline_p50_ms = percentile(p.latency_ms, 0.50);
  out.baseline_p99_ms = percentile(p.latency_ms, 0.99);
  out.baseline_failed += p.failed;
  if (p.failed > 0)
    std::fprintf(stderr, "bench_journal: %llu raw publishes to %s failed, the first with %s\n",
                 static_cast<unsigned long long>(p.failed), stream.c_str(), p.first_error.c_str());
}

/// Reads every message of `stream` through an ordered consumer (what the journal's
/// readers use), decoding each payload; keeps the best rate in `out`.
void run_raw_replay(const std::string& servers, const std::string& stream, replay_figures& out) {
  nats_client c{servers};
  std::size_t n = 0;
  {
    // As many as the stream holds (fewer than the rows if publishes were refused).
    jsStreamInfo* si = nullptr;
    jsErrCode code{};
    check(js_GetStreamInfo(&si, c.js, stream.c_str(), nullptr, &code), "stream info " + stream);
    n = static_cast<std::size_t>(si->State.Msgs);
    jsStreamInfo_Destroy(si);
  }
  jsSubOptions so;
  jsSubOptions_Init(&so);
  so.Ordered = true;
  so.Stream = stream.c_str();
  auto start = clock_type::now();
  natsSubscription* sub = nullptr;
  jsErrCode code{};
  auto filter = stream + ".e.*";
  check(js_SubscribeSync(&sub, c.js, filter.c_str(), nullptr, &so, &code),
        "ordered consumer on " + stream);
  std::size_t rows = 0;
  std::int64_t sum = 0;
  while (rows < n) {
    natsMsg* m = nullptr;
    check(natsSubscription_NextMsg(&m, sub, 10'000), "reading " + stream);
    std::string_view body{natsMsg_GetData(m), static_cast<std::size_t>(natsMsg_GetDataLength(m))};
    sum += decode_cents(payload_of(body));
    natsMsg_Destroy(m);
    ++rows;
  }
  auto elapsed = seconds_since(start);
  natsSubscription_Unsubscribe(sub);
  natsSubscription_Destroy(sub);
  out.baseline_rows_per_s = std::max(out.baseline_rows_per_s, static_cast<double>(rows) / elapsed);
  if (sum == 42)
    std::puts("");
}

// -- the journal --------------------------------------------------------------------------

std::shared_ptr<jetstream_journal> open_journal(jetstream_options opts, const std::string& stream) {
  opts.stream = stream;
  opts.open_timeout = std::chrono::milliseconds{30'000};
  auto j = jetstream_journal::open(opts);
  if (!j)
    die(annals::render(j.error()));
  return *j;
}

} // namespace

results run_jetstream(const config& cfg) {
  auto parsed = parse_jetstream_uri(cfg.uri);
  if (!parsed)
    die(annals::render(parsed.error()));
  auto opts = *parsed;
  results res;
  res.journal = "jetstream R" + std::to_string(opts.replicas);
  res.baseline = opts.replicas > 1
                   ? "raw libnats js_PublishMsgAsync of envelope-shaped bodies with the same "
                     "headers, one publish per subject in flight (a clustered stream refuses "
                     "more), at most --in-flight; one ordered consumer reading"
                   : "raw libnats js_PublishMsgAsync of envelope-shaped bodies with the same "
                     "headers, --in-flight outstanding; one ordered consumer reading";
  res.events = cfg.events == 0 ? 20'000 : cfg.events;
  // A stream name of the user's choice (default ANNALS) prefixes the bench's streams.
  auto base = opts.stream + "_BENCH" + std::to_string(std::random_device{}() % 100'000);
  std::vector<std::string> created;
  std::string replay_journal, replay_raw;
  for (std::size_t ids : {std::size_t{1}, std::size_t{100}, std::size_t{10'000}}) {
    auto rows = make_rows(res.events, ids);
    append_figures fig;
    fig.ids = ids;
    for (std::size_t round = 0; round < cfg.rounds; ++round) {
      auto suffix = std::to_string(ids) + "_" + std::to_string(round);
      auto journal_stream = base + "_J" + suffix;
      auto raw_stream = base + "_R" + suffix;
      created.push_back(journal_stream);
      created.push_back(journal_stream + "_SNAPSHOTS");
      created.push_back(raw_stream);
      append_figures run;
      {
        auto j = open_journal(opts, journal_stream);
        run_journal_appends(*j, rows, cfg.in_flight, run);
        j->close();
      }
      if (run.failed > 0)
        std::fprintf(stderr, "bench_journal: %llu journal appends to %s failed\n",
                     static_cast<unsigned long long>(run.failed), journal_stream.c_str());
      run_raw_appends(opts.servers, raw_stream, opts.replicas, ids, rows, cfg.in_flight, run);
      if (round == 0 || run.events_per_s > fig.events_per_s) {
        fig.events_per_s = run.events_per_s;
        fig.p50_ms = run.p50_ms;
        fig.p99_ms = run.p99_ms;
        fig.max_ms = run.max_ms;
      }
      // A raw round with refused publishes measured errors, not publishes: left out.
      if (run.baseline_failed == 0 && run.baseline_events_per_s > fig.baseline_events_per_s) {
        fig.baseline_events_per_s = run.baseline_events_per_s;
        fig.baseline_p50_ms = run.baseline_p50_ms;
        fig.baseline_p99_ms = run.baseline_p99_ms;
      }
      fig.failed += run.failed;
      fig.baseline_failed += run.baseline_failed;
      replay_journal = journal_stream;
      if (run.baseline_failed == 0 || replay_raw.empty())
        replay_raw = raw_stream;
    }
    res.appends.push_back(fig);
    if (!cfg.json)
      print_append(fig, false);
  }
  // Both reads cover the last 10,000-id streams; alternating and keeping the best of each.
  for (std::size_t round = 0; round < std::max<std::size_t>(cfg.rounds, 3); ++round) {
    run_raw_replay(opts.servers, replay_raw, res.replay);
    // Each page is a new ordered consumer, and creating one on a stream with 10,000
    // subjects took 0.1-1.4 s here (R1): more than the default 2 s request timeout on a
    // loaded cluster. The reads get 10 s.
    auto replay_opts = opts;
    replay_opts.request_timeout = std::chrono::milliseconds{10'000};
    auto j = open_journal(replay_opts, replay_journal);
    run_journal_replay(*j, 2048, res.replay);
    j->close();
  }
  nats_client c{opts.servers};
  for (const auto& s : created)
    c.delete_stream(s);
  return res;
}

} // namespace bench::journal_bench
