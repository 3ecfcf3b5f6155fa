#include <catch2/catch.hpp>

#include <caf/actor_system.hpp>
#include <caf/actor_system_config.hpp>
#include <caf/sec.hpp>

#include "annals/error.hpp"
#include "fixtures.hpp"

namespace late {

// A category whose first error is made only after the actor system is configured.
enum class late_errc : std::uint8_t { slow_disk = 1 };
BOOST_DESCRIBE_ENUM(late_errc, slow_disk)
constexpr std::string_view error_category(late_errc) {
  return "late_cat";
}

} // namespace late

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

TEST_CASE("a program's own error categories render through CAF as category.code: context",
          "[errors]") {
  caf::actor_system_config cfg;
  cfg.set("scheduler.max-threads", 1);
  annals::add_error_renderers(cfg);
  caf::actor_system sys{cfg};
  CHECK(sys.render(annals::make_error(late::late_errc::slow_disk, "fsync took 3 s"))
        == "late_cat.slow_disk: fsync took 3 s");
  CHECK(sys.render(annals::make_error(fx::fx_errc::too_big)) == "fx.too_big");
  CHECK(sys.render(annals::make_error(annals::errc::timeout, "5 ms")) == "annals.timeout: 5 ms");
}

TEST_CASE("an error category name must fit a CAF atom", "[errors]") {
  STATIC_REQUIRE(annals::detail::valid_category_name("bank"));
  STATIC_REQUIRE(annals::detail::valid_category_name("ten_chars_"));
  STATIC_REQUIRE_FALSE(annals::detail::valid_category_name("eleven_char"));
  STATIC_REQUIRE_FALSE(annals::detail::valid_category_name(""));
  STATIC_REQUIRE_FALSE(annals::detail::valid_category_name("my-bank"));
}
