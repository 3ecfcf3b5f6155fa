// The tool's side of the JetStream journal: a URI becomes a `jetstream_journal`, after a
// look at the stream so that reading neither creates a stream nor needs `replicas=` in the
// URI (the stream's own setting is taken).

#include <nats/nats.h>

#include "annals/persistence/jetstream_journal.hpp"

#include "../remote_journal.hpp"

namespace annals::tools::detail {

namespace {

using persistence::jetstream_journal;
using persistence::jetstream_options;

class jetstream_remote final : public remote_journal {
public:
  explicit jetstream_remote(std::shared_ptr<jetstream_journal> j) : j_(std::move(j)) {}
  ~jetstream_remote() override {
    j_->close();
  }
  persistence::journal& journal() override {
    return *j_;
  }
  std::string describe() const override {
    const auto& o = j_->options();
    return "JetStream stream " + o.stream + " (R" + std::to_string(o.replicas) + ") at "
           + o.servers;
  }
  caf::expected<persistence::verify_report> verify() override {
    return j_->verify();
  }

private:
  std::shared_ptr<jetstream_journal> j_;
};

/// The replicas of stream `opts.stream`, 0 if there is no such stream. Throws `failure`
/// when no server answers.
int stream_replicas(const jetstream_options& opts) {
  std::vector<std::string> urls;
  for (std::size_t pos = 0; pos <= opts.servers.size();) {
    auto comma = std::min(opts.servers.find(',', pos), opts.servers.size());
    urls.push_back(opts.servers.substr(pos, comma - pos));
    pos = comma + 1;
  }
  std::vector<const char*> curls;
  for (const auto& u : urls)
    curls.push_back(u.c_str());
  natsOptions* o = nullptr;
  natsConnection* nc = nullptr;
  jsCtx* js = nullptr;
  auto s = natsOptions_Create(&o);
  if (s == NATS_OK)
    s = natsOptions_SetServers(o, curls.data(), static_cast<int>(curls.size()));
  if (s == NATS_OK)
    s = natsOptions_SetTimeout(o, 5'000);
  if (s == NATS_OK)
    s = natsConnection_Connect(&nc, o);
  natsOptions_Destroy(o);
  if (s != NATS_OK)
    fail("cannot reach a NATS server at " + opts.servers + " (" + natsStatus_GetText(s) + ")");
  jsOptions jo;
  jsOptions_Init(&jo);
  jo.Wait = 10'000;
  int replicas = -1;
  std::string problem;
  s = natsConnection_JetStream(&js, nc, &jo);
  if (s == NATS_OK) {
    jsStreamInfo* si = nullptr;
    jsErrCode code{};
    s = js_GetStreamInfo(&si, js, opts.stream.c_str(), nullptr, &code);
    if (s == NATS_OK) {
      replicas = si->Config->Replicas;
      jsStreamInfo_Destroy(si);
    } else if (s == NATS_NOT_FOUND || code == JSStreamNotFoundErr) {
      replicas = 0;
    } else {
      problem = std::string{natsStatus_GetText(s)} + " " + nats_GetLastError(nullptr);
    }
  }
  jsCtx_Destroy(js);
  natsConnection_Destroy(nc);
  if (replicas < 0)
    fail("looking up stream " + opts.stream + " at " + opts.servers + ": " + problem);
  return replicas;
}

} // namespace

std::unique_ptr<remote_journal> open_jetstream(const std::string& uri, bool create) {
  auto parsed = persistence::parse_jetstream_uri(uri);
  if (!parsed)
    usage_error(context_of(parsed.error()));
  auto opts = *parsed;
  auto replicas = stream_replicas(opts);
  if (replicas == 0 && !create)
    fail("no JetStream stream " + opts.stream + " at " + opts.servers
         + " (name the journal's stream with ?stream=NAME)");
  // An existing stream is read with its own replica count unless the URI names one.
  if (replicas > 0 && uri.find("replicas=") == std::string::npos)
    opts.replicas = replicas;
  auto j = jetstream_journal::open(opts);
  if (!j)
    fail(render(j.error()));
  return std::make_unique<jetstream_remote>(std::move(*j));
}

} // namespace annals::tools::detail
