// The two streams of a jetstream_journal: created when missing, checked when present, and
// waited on until they have a leader.

#include <thread>

#include "jetstream/state.hpp"

namespace annals::persistence {

using namespace jetstream;

namespace {

struct stream_spec {
  std::string name;
  std::string subject;
  int replicas = 1;
  std::int64_t duplicates_ns = 0;
  bool append_only = false;
  std::int64_t max_per_subject = -1;
};

/// The settings of `si` that differ from `spec`, as "what is (what we want)".
std::vector<std::string> differences(const jsStreamConfig& c, const stream_spec& spec) {
  std::vector<std::string> out;
  if (c.SubjectsLen != 1 || spec.subject != c.Subjects[0]) {
    std::string subs;
    for (int i = 0; i < c.SubjectsLen; ++i)
      subs += (i > 0 ? "," : "") + std::string{c.Subjects[i]};
    out.push_back("subjects [" + subs + "] (the journal needs [" + spec.subject + "])");
  }
  if (c.Replicas != spec.replicas)
    out.push_back("replicas " + std::to_string(c.Replicas) + " (the journal was opened with "
                  + std::to_string(spec.replicas) + ")");
  if (c.Storage != js_FileStorage)
    out.push_back("memory storage (the journal needs file storage)");
  if (c.Retention != js_LimitsPolicy)
    out.push_back("a retention policy other than limits");
  if (c.MaxMsgs > 0 || c.MaxBytes > 0 || c.MaxAge > 0)
    out.push_back("limits on messages, bytes or age (a journal keeps everything)");
  if (c.MaxMsgsPerSubject != spec.max_per_subject
      && !(c.MaxMsgsPerSubject <= 0 && spec.max_per_subject <= 0))
    out.push_back("max_msgs_per_subject " + std::to_string(c.MaxMsgsPerSubject) + " (wanted "
                  + std::to_string(spec.max_per_subject) + ")");
  if (spec.append_only && (!c.DenyDelete || !c.DenyPurge))
    out.push_back("deleting or purging allowed (the journal is append-only)");
  if (c.Duplicates != spec.duplicates_ns)
    out.push_back("duplicate_window " + std::to_string(c.Duplicates / 1'000'000) + " ms (wanted "
                  + std::to_string(spec.duplicates_ns / 1'000'000) + ")");
  return out;
}

caf::error ensure(jsCtx* js, const stream_spec& spec, std::int64_t wait_ms) {
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = wait_ms;
  jsStreamInfo* si = nullptr;
  jsErrCode code{};
  auto s = js_GetStreamInfo(&si, js, spec.name.c_str(), &jo, &code);
  if (s == NATS_OK) {
    auto diff = differences(*si->Config, spec);
    jsStreamInfo_Destroy(si);
    if (diff.empty())
      return {};
    std::string text = "JetStream stream " + spec.name + " exists with other settings: ";
    for (std::size_t i = 0; i < diff.size(); ++i)
      text += (i > 0 ? "; " : "") + diff[i];
    return make_error(journal_errc::not_a_journal, text + "; it was left unchanged");
  }
  if (s != NATS_NOT_FOUND && code != JSStreamNotFoundErr)
    return nats_error(s, "looking up JetStream stream " + spec.name, code);
  jsStreamConfig cfg;
  jsStreamConfig_Init(&cfg);
  const char* subj = spec.subject.c_str();
  cfg.Name = spec.name.c_str();
  cfg.Subjects = &subj;
  cfg.SubjectsLen = 1;
  cfg.Storage = js_FileStorage;
  cfg.Retention = js_LimitsPolicy;
  cfg.Replicas = spec.replicas;
  cfg.Duplicates = spec.duplicates_ns;
  cfg.DenyDelete = spec.append_only;
  cfg.DenyPurge = spec.append_only;
  cfg.MaxMsgsPerSubject = spec.max_per_subject;
  code = jsErrCode{};
  s = js_AddStream(&si, js, &cfg, &jo, &code);
  if (s != NATS_OK)
    return nats_error(s, "creating JetStream stream " + spec.name, code);
  jsStreamInfo_Destroy(si);
  return {};
}

/// Waits until `stream` has a leader (replicated streams elect one after creation).
caf::error await_leader(jsCtx* js, const std::string& stream, clock::time_point deadline,
                        std::int64_t wait_ms) {
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = wait_ms;
  for (;;) {
    jsStreamInfo* si = nullptr;
    jsErrCode code{};
    auto s = js_GetStreamInfo(&si, js, stream.c_str(), &jo, &code);
    bool led =
      s == NATS_OK
      && (si->Cluster == nullptr || (si->Cluster->Leader != nullptr && *si->Cluster->Leader));
    if (si != nullptr)
      jsStreamInfo_Destroy(si);
    if (led)
      return {};
    if (clock::now() >= deadline)
      return make_error(journal_errc::unavailable,
                        "JetStream stream " + stream + " has no leader yet");
    std::this_thread::sleep_for(std::chrono::milliseconds{50});
  }
}

} // namespace

caf::error jetstream_journal::impl::ensure_streams() {
  auto deadline = clock::now() + opts.open_timeout;
  auto dup_ns = static_cast<std::int64_t>(opts.duplicate_window.count()) * 1'000'000;
  std::vector<stream_spec> specs{
    {names.stream, names.events_filter(), opts.replicas, dup_ns, true, -1},
    {names.snapshot_stream, names.snapshots_filter(), opts.replicas, dup_ns, false,
     static_cast<std::int64_t>(std::max<std::size_t>(opts.keep_snapshots, 1))}};
  for (const auto& spec : specs) {
    for (;;) {
      auto err = ensure(js, spec, opts.request_timeout.count());
      if (!err)
        err = await_leader(js, spec.name, deadline, opts.request_timeout.count());
      if (!err)
        break;
      if (!is(err, journal_errc::unavailable) || clock::now() >= deadline)
        return err;
      std::this_thread::sleep_for(std::chrono::milliseconds{100});
    }
  }
  return {};
}

} // namespace annals::persistence
