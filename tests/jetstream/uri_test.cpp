// Journal URIs: nats://HOST:PORT[,HOST:PORT...][?stream=NAME&replicas=N] (no server needed).

#include <catch2/catch.hpp>

#include "annals/error.hpp"
#include "annals/persistence/jetstream_journal.hpp"

using namespace annals;
using namespace annals::persistence;

TEST_CASE("a journal URI names the servers, the stream and the replicas", "[jetstream][uri]") {
  auto one = parse_jetstream_uri("nats://127.0.0.1:4222");
  REQUIRE(one);
  CHECK(one->servers == "nats://127.0.0.1:4222");
  CHECK(one->stream == "ANNALS");
  CHECK(one->replicas == 1);

  auto three = parse_jetstream_uri("nats://a:1,b:2,nats://c:3?stream=BANK-1_x&replicas=3");
  REQUIRE(three);
  CHECK(three->servers == "nats://a:1,nats://b:2,nats://c:3");
  CHECK(three->stream == "BANK-1_x");
  CHECK(three->replicas == 3);
}

TEST_CASE("a malformed journal URI is refused naming what is wrong", "[jetstream][uri]") {
  auto refused = [](const char* uri, const char* words) {
    auto res = parse_jetstream_uri(uri);
    REQUIRE_FALSE(res);
    CHECK(is(res.error(), journal_errc::invalid_request));
    INFO(render(res.error()));
    CHECK(context_of(res.error()).find(words) != std::string::npos);
  };
  refused("sqlite:bank.db", "does not start with nats://");
  refused("nats://", "is not HOST:PORT");
  refused("nats://a:1,,b:2", "is not HOST:PORT");
  refused("nats://a:1?stream=a.b", "is not a stream name");
  refused("nats://a:1?stream=", "is not a stream name");
  refused("nats://a:1?replicas=2x", "is not a number from 1 to 5");
  refused("nats://a:1?replicas=0", "is not a number from 1 to 5");
  refused("nats://a:1?stream=A&colour=blue", "unknown parameter 'colour'");
}
