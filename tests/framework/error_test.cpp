#include <catch2/catch.hpp>

#include <caf/sec.hpp>

#include "annals/error.hpp"
#include "fixtures.hpp"

TEST_CASE("an error enum maps to a caf::error with its category and code", "[errors]") {
  caf::error err = annals::make_error(fx::fx_errc::empty_text);
  CHECK(err.code() == 2);
  CHECK(err.category() == caf::atom("fx"));
  CHECK(annals::is(err, fx::fx_errc::empty_text));
  CHECK_FALSE(annals::is(err, fx::fx_errc::too_big));
  CHECK(annals::category_name(err) == "fx");
  CHECK(annals::code_name(err) == "empty_text");
}

TEST_CASE("an error renders as category.code with its context", "[errors]") {
  auto err = annals::make_error(annals::errc::decode_failed, "acc-1 seq 3: invalid JSON");
  CHECK(annals::render(err) == "annals.decode_failed: acc-1 seq 3: invalid JSON");
  CHECK(annals::context_of(err) == "acc-1 seq 3: invalid JSON");
  CHECK(annals::render(caf::error{}) == "none");
}

TEST_CASE("CAF's own errors render by name", "[errors]") {
  caf::error err = caf::make_error(caf::sec::request_timeout);
  CHECK(annals::render(err) == "system.request_timeout");
}

TEST_CASE("rejected carries an error through an exception", "[errors]") {
  try {
    throw annals::rejected{fx::fx_errc::too_big, "n = 5000"};
  } catch (const std::exception& e) {
    CHECK(std::string{e.what()} == "fx.too_big: n = 5000");
  }
}
