// annals-bank: the bank and football service over HTTP/1.1 + JSON.
//
//   annals-bank [--db PATH] [--journal URI] [--search-dir DIR] [--redis URL]
//               [--statements-dir DIR] [--publish NATS-URL] [--port N] [--host ADDR]
//               [--threads N]
//   annals-bank admin <subcommand> ...   (the annals tool with the bank's types registered)
//
// Prints "annals-bank listening on http://ADDR:PORT" once it serves (with --port 0 the
// port is the one the system chose). --journal sqlite:PATH is --db PATH; --journal
// nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N] keeps the journal on NATS
// JetStream and the read models in the --db file; --journal postgresql://USER@HOST:PORT/DB
// keeps the journal and the balances and statement read models in PostgreSQL; --redis
// redis://HOST:PORT[/DB] keeps the scoreboard and top scorers in Redis (exactly-once
// projections) instead of memory. The search index (GET /search) is the directory
// --search-dir, by default the --db path with ".search" appended, whichever the journal.
// SIGTERM or SIGINT:
// stop accepting connections, finish the commands in flight, answer them, exit 0.
// --statements-dir DIR also keeps each account's statement as DIR/<account id>.jsonl
// (one JSON line per event), exactly once per file across crashes.
// --publish nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N&mode=core] publishes the
// bank's public events (samples/account/public_contract.hpp) to NATS through the projection
// "publisher", its offset in the --db file.

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>

#include "account/account.hpp"
#include "account/balances.hpp"
#include "account/statement.hpp"
#include "account/transfer.hpp"
#include "annals/actors/system.hpp"
#include "annals/error.hpp"
#include "annals/persistence/redact.hpp"
#include "annals/tools/cli.hpp"
#include "match/match.hpp"
#include "service/bank_service.hpp"
#ifdef ANNALS_BANK_WITH_XAPIAN
#include "service/bank/search_index.hpp"
#endif
#include "service/http.hpp"

namespace {

struct flags {
  std::string db = "./annals.db";
  std::string journal;    // empty: the --db file
  std::string search_dir; // empty: the --db path + ".search"
  std::string redis;      // empty: the football read models in memory
  std::string host = "127.0.0.1";
  unsigned short port = 8080;
  std::size_t threads = 2;
  std::string statements_dir; // empty: no statement files
  std::string publish;        // empty: no public events published
};

[[noreturn]] void usage(const char* why) {
  std::fprintf(
    stderr,
    "annals-bank: %s\n"
    "usage: annals-bank [--db PATH] [--journal URI] [--search-dir DIR] [--redis URL] "
    "[--statements-dir DIR] [--publish NATS-URL] [--port N] [--host ADDR] [--threads N]\n"
    "       URL: redis://HOST:PORT[/DB] (the scoreboard and top scorers in Redis)\n"
    "       NATS-URL: nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N&mode=core]\n"
    "            (the bank's public events, to JetStream or with mode=core to plain NATS)\n"
    "       URI: sqlite:PATH | nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N]\n"
    "            | postgresql://USER@HOST:PORT/DB\n"
    "       annals-bank admin <subcommand> ...  (annals-bank admin --help)\n",
    why);
  std::exit(2);
}

unsigned long number(std::string_view flag, const char* text, unsigned long max) {
  char* end = nullptr;
  errno = 0;
  auto v = std::strtoul(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v > max)
    usage((std::string{flag} + " needs a number up to " + std::to_string(max)).c_str());
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
    else if (a == "--journal")
      f.journal = value();
    else if (a == "--redis")
      f.redis = value();
    else if (a == "--search-dir")
      f.search_dir = value();
    else if (a == "--host")
      f.host = value();
    else if (a == "--port")
      f.port = static_cast<unsigned short>(number(a, value(), 65535));
    else if (a == "--statements-dir")
      f.statements_dir = value();
    else if (a == "--publish")
      f.publish = value();
    else if (a == "--threads")
      f.threads = number(a, value(), 64);
    else if (a == "--help" || a == "-h")
      usage("the bank and football service");
    else
      usage(("unknown argument " + std::string{a}).c_str());
  }
  return f;
}

// `annals-bank admin ...`: the operator tool on the bank's journal files, with the
// aggregate types and SQL projections that bank_service.cpp registers.
int admin(int argc, char** argv) {
  annals::tools::cli tool{"annals-bank admin"};
  tool.register_aggregate<bank::account>();
  tool.register_aggregate<bank::transfer>();
  tool.register_aggregate<match::football_match>();
  auto accounts = annals::actors::event_filter::aggregate_type<bank::account>();
  tool.register_projection(
    "balances", [] { return std::make_shared<bank::balances_projection>(); }, accounts);
  tool.register_projection(
    "statement", [] { return std::make_shared<bank::statement_projection>(); }, accounts);
#ifdef ANNALS_BANK_WITH_XAPIAN
  // The search index beside the journal file, as the service keeps it by default.
  tool.register_sink(
    "search",
    [](const std::string& db) -> caf::expected<std::shared_ptr<annals::actors::projection_sink>> {
      return service::make_search_sink(db + ".search");
    });
#endif
  return tool.run(argc, argv, std::cout, std::cerr);
}

} // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view{argv[1]} == "admin")
    return admin(argc - 1, argv + 1);
  auto f = parse(argc, argv);

  // Every thread started from here on inherits the blocked signals; this thread takes them
  // with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  caf::actor_system_config cfg;
  annals::actors::configure(cfg);
  caf::actor_system sys{cfg};

  auto where = f.journal.empty() ? f.db : annals::persistence::redact_secrets(f.journal);
  auto app = service::bank_service::open(sys, {.db_path = f.db,
                                               .journal = f.journal,
                                               .redis = f.redis,
                                               .search_dir = f.search_dir,
                                               .statements_dir = f.statements_dir,
                                               .publish = f.publish});
  if (!app) {
    std::fprintf(stderr, "annals-bank: cannot open %s: %s\n", where.c_str(),
                 annals::render(app.error()).c_str());
    return 1;
  }
  auto* svc = app->get();
  auto server = service::http::server::open(
    {.host = f.host, .port = f.port, .threads = f.threads},
    [svc](service::http::request req, service::http::responder respond) {
      svc->handle(std::move(req), std::move(respond));
    });
  if (!server) {
    std::fprintf(stderr, "annals-bank: cannot listen on %s:%u: %s\n", f.host.c_str(),
                 static_cast<unsigned>(f.port), server.error().c_str());
    return 1;
  }
  std::printf("annals-bank listening on http://%s:%u (journal %s)\n", f.host.c_str(),
              static_cast<unsigned>((*server)->port()), where.c_str());
  std::fflush(stdout);

  // Transfers that a stop interrupted finish (or compensate) in the background.
  std::thread resumer{[svc] {
    auto n = svc->resume_transfers();
    if (!n)
      std::fprintf(stderr, "annals-bank: resuming transfers failed: %s\n",
                   annals::render(n.error()).c_str());
    else if (*n > 0)
      std::fprintf(stderr, "annals-bank: resumed %zu interrupted transfer(s)\n", *n);
  }};

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::fprintf(stderr, "annals-bank: %s received, draining\n",
               sig == SIGTERM ? "SIGTERM" : "SIGINT");
  (*server)->stop_accepting();
  auto drained = svc->drain(std::chrono::seconds{30});
  bool idle = (*server)->wait_idle(std::chrono::seconds{10});
  (*server)->stop();
  resumer.join();
  app->reset();
  if (drained) {
    std::fprintf(stderr, "annals-bank: drain incomplete: %s\n", annals::render(drained).c_str());
    return 1;
  }
  std::fprintf(stderr, "annals-bank: stopped cleanly (%s)\n",
               idle ? "every request answered" : "some connections were cut");
  return 0;
}
