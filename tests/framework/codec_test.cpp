#include <catch2/catch.hpp>

#include <boost/describe.hpp>
#include <boost/json.hpp>

#include "annals/codec.hpp"
#include "fixtures.hpp"

namespace versions {

// Version 3 of a goal event. v1 had {"who"}; v2 renamed it to "player"; v3 added "minute".
struct goal_scored {
  static constexpr auto name = "test.goal_scored";
  static constexpr std::uint32_t version = 3;
  static void v1_to_v2(boost::json::object& o) {
    o["player"] = o["who"];
    o.erase("who");
  }
  static void v2_to_v3(boost::json::object& o) {
    o["minute"] = 0;
  }
  static constexpr annals::upcaster upcasters[] = {{2, &v2_to_v3}, {1, &v1_to_v2}};
  std::string player;
  int minute = 0;
  friend bool operator==(const goal_scored&, const goal_scored&) = default;
};
BOOST_DESCRIBE_STRUCT(goal_scored, (), (player, minute))

// Version 3 with only the first step of its chain.
struct card_shown {
  static constexpr auto name = "test.card_shown";
  static constexpr std::uint32_t version = 3;
  static void v1_to_v2(boost::json::object&) {}
  static constexpr annals::upcaster upcasters[] = {{1, &v1_to_v2}};
  std::string player;
};
BOOST_DESCRIBE_STRUCT(card_shown, (), (player))

// Claims the name of fx::noted with another type.
struct impostor {
  static constexpr auto name = "fx.noted";
  int x;
};
BOOST_DESCRIBE_STRUCT(impostor, (), (x))

// A type with its own JSON form instead of Boost.Describe.
struct moved {
  static constexpr auto name = "test.moved";
  int x = 0;
  int y = 0;
  friend bool operator==(const moved&, const moved&) = default;
};

void tag_invoke(boost::json::value_from_tag, boost::json::value& jv, const moved& m) {
  jv = boost::json::array{m.x, m.y};
}

moved tag_invoke(boost::json::value_to_tag<moved>, const boost::json::value& jv) {
  const auto& a = jv.as_array();
  return moved{static_cast<int>(a.at(0).to_number<int>()),
               static_cast<int>(a.at(1).to_number<int>())};
}

} // namespace versions

using goal_codec = annals::event_codec<versions::goal_scored, versions::moved>;
using notebook_codec = annals::event_codec<fx::noted, fx::counted>;

TEST_CASE("events round-trip through their JSON form", "[codec]") {
  REQUIRE_FALSE(notebook_codec::validate());
  auto enc = notebook_codec::encode(fx::noted{"hello \"world\""});
  CHECK(enc.name == "fx.noted");
  CHECK(enc.version == 1);
  auto back = notebook_codec::decode(enc.name, enc.version, enc.payload);
  REQUIRE(back);
  CHECK(std::get<fx::noted>(*back).text == "hello \"world\"");
}

TEST_CASE("a custom tag_invoke codec is used where a type defines one", "[codec]") {
  auto enc = goal_codec::encode(versions::moved{3, -4});
  CHECK(enc.payload == "[3,-4]");
  auto back = goal_codec::decode(enc.name, enc.version, enc.payload);
  REQUIRE(back);
  CHECK(std::get<versions::moved>(*back) == versions::moved{3, -4});
}

TEST_CASE("older event versions are upcast through the whole chain, v1 -> v2 -> v3",
          "[codec][upcast]") {
  REQUIRE_FALSE(goal_codec::validate());
  auto v1 = goal_codec::decode("test.goal_scored", 1, R"({"who":"Pele"})");
  REQUIRE(v1);
  CHECK(std::get<versions::goal_scored>(*v1) == versions::goal_scored{"Pele", 0});
  auto v2 = goal_codec::decode("test.goal_scored", 2, R"({"player":"Kane"})");
  REQUIRE(v2);
  CHECK(std::get<versions::goal_scored>(*v2) == versions::goal_scored{"Kane", 0});
  auto v3 = goal_codec::decode("test.goal_scored", 3, R"({"player":"Kerr","minute":77})");
  REQUIRE(v3);
  CHECK(std::get<versions::goal_scored>(*v3) == versions::goal_scored{"Kerr", 77});
}

TEST_CASE("a missing upcaster is found at start-up by validate", "[codec][upcast]") {
  auto err = annals::event_codec<versions::card_shown>::validate();
  REQUIRE(err);
  CHECK(annals::is(err, annals::errc::upcaster_gap));
  CHECK_THAT(annals::render(err),
             Catch::Contains("'test.card_shown' version 3 has no upcaster from version 2"));
}

TEST_CASE("two event types registered under one name fail validation", "[codec]") {
  REQUIRE_FALSE(notebook_codec::validate());
  auto err = annals::event_codec<versions::impostor>::validate();
  REQUIRE(err);
  CHECK(annals::is(err, annals::errc::duplicate_event_name));
  CHECK_THAT(annals::render(err), Catch::Contains("'fx.noted'"));
}

TEST_CASE("decoding names what is wrong with a stored event", "[codec][errors]") {
  SECTION("invalid JSON") {
    auto r = notebook_codec::decode("fx.noted", 1, R"({"text":)");
    REQUIRE_FALSE(r);
    CHECK(annals::is(r.error(), annals::errc::decode_failed));
    CHECK_THAT(annals::render(r.error()), Catch::Contains("invalid JSON"));
  }
  SECTION("an unknown event name") {
    auto r = notebook_codec::decode("fx.vanished", 1, "{}");
    REQUIRE_FALSE(r);
    CHECK(annals::is(r.error(), annals::errc::unknown_event));
    CHECK_THAT(annals::render(r.error()), Catch::Contains("fx.vanished"));
  }
  SECTION("a version newer than the program knows") {
    auto r = notebook_codec::decode("fx.noted", 2, R"({"text":"x"})");
    REQUIRE_FALSE(r);
    CHECK(annals::is(r.error(), annals::errc::newer_version));
  }
  SECTION("a field of the wrong type") {
    auto r = notebook_codec::decode("fx.counted", 1, R"({"n":"seven"})");
    REQUIRE_FALSE(r);
    CHECK(annals::is(r.error(), annals::errc::decode_failed));
  }
  SECTION("a missing field") {
    auto r = notebook_codec::decode("fx.counted", 1, R"({})");
    REQUIRE_FALSE(r);
    CHECK(annals::is(r.error(), annals::errc::decode_failed));
  }
  SECTION("an extra field") {
    auto r = notebook_codec::decode("fx.counted", 1, R"({"n":1,"m":2})");
    REQUIRE_FALSE(r);
    CHECK(annals::is(r.error(), annals::errc::decode_failed));
  }
  SECTION("an old version that is not an object cannot be upcast") {
    auto r = goal_codec::decode("test.goal_scored", 1, R"([1,2])");
    REQUIRE_FALSE(r);
    CHECK(annals::is(r.error(), annals::errc::decode_failed));
  }
}
