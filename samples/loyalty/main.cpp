// annals-loyalty: a second bounded context. Loyalty members earn one point per cent credited
// to their bank account, learnt from the bank's public messages on NATS JetStream, and keep
// their points in their own event-sourced journal.
//
//   annals-loyalty [--db PATH] [--nats URL[,URL...]] [--stream NAME] [--durable NAME]
//                  [--ack-wait SECONDS] [--port N] [--host ADDR]
//
// Prints "annals-loyalty listening on http://ADDR:PORT" once it serves and consumes.
//   GET /members/{account}  {"account":..., "points":N, "earnings":N}; 404 for no points
//   GET /health             {"status":"ok", "handled":N, "rejected":N, "retried":N, ...}
// SIGTERM or SIGINT: stop fetching, finish and ack the message in hand, answer the requests
// in flight, exit 0.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include <boost/json/object.hpp>
#include <boost/json/serialize.hpp>
#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "annals/actors/host.hpp"
#include "annals/actors/system.hpp"
#include "annals/error.hpp"
#include "annals/persistence/sqlite_journal.hpp"
#include "loyalty/credits_consumer.hpp"
#include "loyalty/member.hpp"
#include "service/http.hpp"

namespace {

namespace json = boost::json;

struct flags {
  std::string db = "./loyalty.db";
  std::string host = "127.0.0.1";
  unsigned short port = 8081;
  loyalty::consumer_options consumer;
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(stderr,
               "annals-loyalty: %s\n"
               "usage: annals-loyalty [--db PATH] [--nats URL[,URL...]] [--stream NAME] "
               "[--durable NAME] [--ack-wait SECONDS] [--port N] [--host ADDR]\n",
               why);
  std::exit(2);
}

unsigned long number(std::string_view flag, const char* text, unsigned long min,
                     unsigned long max) {
  char* end = nullptr;
  errno = 0;
  auto v = std::strtoul(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < min || v > max)
    usage(
      (std::string{flag} + " needs a number in " + std::to_string(min) + ".." + std::to_string(max))
        .c_str());
  return v;
}

flags parse(int argc, char** argv) {
  flags f;
  for (int i = 1; i < argc; ++i) {
    std::string_view a = argv[i];
    auto value = [&]() -> const char* {
      if (i + 1 >= argc)
        usage((std::string{a} + " needs a value").c_str());
      return argv[++i];
    };
    if (a == "--db")
      f.db = value();
    else if (a == "--nats")
      f.consumer.servers = value();
    else if (a == "--stream")
      f.consumer.stream = value();
    else if (a == "--durable")
      f.consumer.durable = value();
    else if (a == "--ack-wait")
      f.consumer.ack_wait = std::chrono::seconds{number(a, value(), 1, 3600)};
    else if (a == "--crash-before-ack") // fault injection for tests
      f.consumer.crash_before_ack = number(a, value(), 1, 1'000'000'000);
    else if (a == "--host")
      f.host = value();
    else if (a == "--port")
      f.port = static_cast<unsigned short>(number(a, value(), 0, 65535));
    else if (a == "--help" || a == "-h")
      usage("loyalty points for the bank's credits");
    else
      usage(("unknown argument " + std::string{a}).c_str());
  }
  return f;
}

service::http::response json_reply(unsigned status, const json::object& body) {
  return {status, json::serialize(body) + "\n"};
}

void handle(annals::actors::host& members, const loyalty::credits_consumer& consumer,
            const service::http::request& req, service::http::responder respond) {
  const auto& seg = req.segments;
  if (req.method != "GET")
    return respond(service::http::json_error(405, "method_not_allowed", "only GET is served"));
  if (seg.size() == 1 && seg[0] == "health") {
    auto c = consumer.counts();
    auto m = members.metrics();
    return respond(json_reply(200, {{"status", "ok"},
                                    {"handled", c.handled},
                                    {"rejected", c.rejected},
                                    {"retried", c.retried},
                                    {"duplicates", m.duplicates}}));
  }
  if (seg.size() == 2 && seg[0] == "members") {
    if (auto err = annals::actors::host::check_id(seg[1], "account id"))
      return respond(service::http::json_error(400, "invalid_id", annals::render(err)));
    members.ask_async<loyalty::member>(
      seg[1], loyalty::get_points{},
      [respond, id = seg[1]](caf::expected<loyalty::member_state> st) {
        if (st)
          respond(
            json_reply(200, {{"account", id}, {"points", st->points}, {"earnings", st->earnings}}));
        else if (annals::is(st.error(), loyalty::member_errc::not_found))
          respond(service::http::json_error(404, "not_found", annals::render(st.error())));
        else
          respond(service::http::json_error(503, "unavailable", annals::render(st.error())));
      });
    return;
  }
  respond(service::http::json_error(404, "unknown_route", "no route for " + req.path));
}

} // namespace

int main(int argc, char** argv) {
  auto f = parse(argc, argv);

  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  caf::actor_system_config cfg;
  annals::actors::configure(cfg);
  caf::actor_system sys{cfg};

  auto journal = annals::persistence::sqlite_journal::open({.path = f.db});
  if (!journal) {
    std::fprintf(stderr, "annals-loyalty: cannot open %s: %s\n", f.db.c_str(),
                 annals::render(journal.error()).c_str());
    return 1;
  }
  auto members = std::make_unique<annals::actors::host>(sys, *journal, (*journal)->snapshots());
  if (auto err = members->register_aggregate<loyalty::member>({.snapshot_every = 200})) {
    std::fprintf(stderr, "annals-loyalty: %s\n", annals::render(err).c_str());
    return 1;
  }
  auto consumer = loyalty::credits_consumer::open(*members, f.consumer);
  if (!consumer) {
    std::fprintf(stderr, "annals-loyalty: cannot consume from %s: %s\n", f.consumer.servers.c_str(),
                 annals::render(consumer.error()).c_str());
    return 1;
  }
  auto* h = members.get();
  auto* c = consumer->get();
  auto server = service::http::server::open(
    {.host = f.host, .port = f.port, .threads = 2},
    [h, c](service::http::request req, service::http::responder respond) {
      handle(*h, *c, req, std::move(respond));
    });
  if (!server) {
    std::fprintf(stderr, "annals-loyalty: cannot listen on %s:%u: %s\n", f.host.c_str(),
                 static_cast<unsigned>(f.port), server.error().c_str());
    return 1;
  }
  std::thread consuming{[c] { c->run(); }};
  std::printf("annals-loyalty listening on http://%s:%u (journal %s, %s from %s)\n", f.host.c_str(),
              static_cast<unsigned>((*server)->port()), f.db.c_str(), f.consumer.subject.c_str(),
              f.consumer.servers.c_str());
  std::fflush(stdout);

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "annals-loyalty: %s received, draining\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
  c->stop();
  consuming.join(); // the message in hand is acked first
  (*server)->stop_accepting();
  auto drained = members->drain(std::chrono::seconds{30});
  bool idle = (*server)->wait_idle(std::chrono::seconds{10});
  (*server)->stop();
  consumer->reset();
  members.reset();
  (*journal)->close();
  if (drained) {
    std::fprintf(stderr, "annals-loyalty: drain incomplete: %s\n", annals::render(drained).c_str());
    return 1;
  }
  std::fprintf(stderr, "annals-loyalty: stopped cleanly (%s)\n",
               idle ? "every request answered" : "some connections were cut");
  return 0;
}
