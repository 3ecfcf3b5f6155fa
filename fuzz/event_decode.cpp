// libFuzzer target: decoding stored events, the way a replay reads them from the journal.
//
// Input layout: byte 0 selects an event (or snapshot) name from `targets` below, byte 1 is
// the stored schema version (0..255), and the remaining bytes are the stored JSON payload.
// Checks: decoding never crashes or throws; a failure is one of the codec's documented
// errors; a successful decode re-encodes under the same name at the current version, and
// that encoding decodes to an equal value and encodes to the same bytes again.

#include <charconv>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <variant>
#include <vector>

#include <boost/describe.hpp>
#include <boost/json.hpp>
#include <boost/mp11/algorithm.hpp>

#include "account/account.hpp"
#include "annals/codec.hpp"
#include "annals/error.hpp"
#include "match/match.hpp"

namespace fz {

enum class team : std::uint8_t { home, away };
BOOST_DESCRIBE_ENUM(team, home, away)

// A goal at version 3. v1 stored {"who"}; v2 renamed it to "player" and stored the minute as
// a string; v3 holds the minute as a number and adds the team (home when unknown).
struct goal {
  static constexpr auto name = "fz.goal";
  static constexpr std::uint32_t version = 3;

  static void v1_to_v2(boost::json::object& o) {
    if (auto* who = o.if_contains("who")) {
      boost::json::value player = std::move(*who);
      o.erase("who");
      o["player"] = std::move(player);
    }
    if (!o.contains("minute"))
      o["minute"] = "0";
  }

  static void v2_to_v3(boost::json::object& o) {
    if (auto* minute = o.if_contains("minute"); minute != nullptr && minute->is_string()) {
      auto text = std::string_view{minute->get_string()};
      int m = 0;
      auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), m);
      if (ec != std::errc{} || end != text.data() + text.size())
        throw std::invalid_argument{"minute '" + std::string{text} + "' is not a number"};
      *minute = m;
    }
    if (!o.contains("team"))
      o["team"] = "home";
  }

  static constexpr annals::upcaster upcasters[] = {{1, &v1_to_v2}, {2, &v2_to_v3}};

  std::string player;
  int minute = 0;
  fz::team team = team::home;

  friend bool operator==(const goal&, const goal&) = default;
};
BOOST_DESCRIBE_STRUCT(goal, (), (player, minute, team))

// Strings, vectors, signed and unsigned integers and a flag, described.
struct note {
  static constexpr auto name = "fz.note";
  static constexpr std::string_view tags[] = {"notes"};
  std::string text;
  std::vector<std::string> labels;
  std::int64_t amount = 0;
  std::uint32_t count = 0;
  bool pinned = false;

  friend bool operator==(const note&, const note&) = default;
};
BOOST_DESCRIBE_STRUCT(note, (), (text, labels, amount, count, pinned))

// A type with its own JSON form, [x, y], whose conversion throws on other shapes.
struct point {
  static constexpr auto name = "fz.point";
  int x = 0;
  int y = 0;

  friend bool operator==(const point&, const point&) = default;
};

void tag_invoke(boost::json::value_from_tag, boost::json::value& jv, const point& p) {
  jv = boost::json::array{p.x, p.y};
}

point tag_invoke(boost::json::value_to_tag<point>, const boost::json::value& jv) {
  const auto& a = jv.as_array();
  if (a.size() != 2)
    throw std::invalid_argument{"a point is [x, y]"};
  return point{a.at(0).to_number<int>(), a.at(1).to_number<int>()};
}

using codec = annals::event_codec<goal, note, point>;

} // namespace fz

namespace {

using bank_codec =
  annals::event_codec<bank::opened, bank::deposited, bank::withdrawn, bank::closed>;
using match_codec =
  annals::event_codec<match::scheduled, match::kicked_off, match::goal_scored, match::card_shown,
                      match::substituted, match::half_time_called, match::second_half_started,
                      match::full_time_called>;

[[noreturn]] void fail(std::string_view what, std::string_view name, std::uint32_t version,
                       std::string_view payload) {
  std::fprintf(stderr, "fuzz_event_decode: %.*s\n  name: %.*s\n  version: %u\n  payload: %.*s\n",
               static_cast<int>(what.size()), what.data(), static_cast<int>(name.size()),
               name.data(), version, static_cast<int>(payload.size()), payload.data());
  std::abort();
}

// Member-wise equality: operator== where a type has one, Boost.Describe members otherwise.
template <class T>
bool same(const T& a, const T& b) {
  if constexpr (requires { a == b; }) {
    return a == b;
  } else {
    static_assert(boost::describe::has_describe_members<T>::value,
                  "an event without operator== must be described");
    bool equal = true;
    boost::mp11::mp_for_each<boost::describe::describe_members<T, boost::describe::mod_public>>(
      [&](auto member) { equal = equal && same(a.*member.pointer, b.*member.pointer); });
    return equal;
  }
}

template <class... Ts>
bool same(const std::variant<Ts...>& a, const std::variant<Ts...>& b) {
  if (a.index() != b.index())
    return false;
  return std::visit([&b](const auto& x) { return same(x, std::get<std::decay_t<decltype(x)>>(b)); },
                    a);
}

bool documented_decode_error(const caf::error& err) {
  using annals::errc;
  return annals::is(err, errc::decode_failed) || annals::is(err, errc::unknown_event)
         || annals::is(err, errc::newer_version) || annals::is(err, errc::upcaster_gap);
}

template <class Codec>
void check_event(std::string_view name, std::uint32_t version, std::string_view payload) {
  auto first = Codec::decode(name, version, payload);
  if (!first) {
    if (!documented_decode_error(first.error()) || annals::render(first.error()).empty())
      fail("decode failed with an undocumented error: " + annals::render(first.error()), name,
           version, payload);
    return;
  }
  auto enc = Codec::encode(*first);
  if (enc.name != name)
    fail("re-encoded under another name: " + enc.name, name, version, payload);
  auto current = std::visit(
    [](const auto& e) { return annals::schema_version<std::decay_t<decltype(e)>>(); }, *first);
  if (enc.version != current)
    fail("re-encoded at version " + std::to_string(enc.version), name, version, payload);
  auto second = Codec::decode(enc.name, enc.version, enc.payload);
  if (!second)
    fail("the re-encoded event does not decode: " + annals::render(second.error()) + "\n  "
           + enc.payload,
         name, version, payload);
  if (!same(*first, *second))
    fail("the re-encoded event decodes to another value: " + enc.payload, name, version, payload);
  if (!(Codec::encode(*second) == enc))
    fail("encoding is not stable: " + enc.payload, name, version, payload);
}

template <class State>
void check_snapshot(std::uint32_t version, std::string_view payload) {
  using codec = annals::type_codec<State>;
  auto first = codec::from_json(version, payload);
  if (!first) {
    if (!documented_decode_error(first.error()))
      fail("snapshot decode failed with an undocumented error: " + annals::render(first.error()),
           codec::name(), version, payload);
    return;
  }
  auto text = codec::to_json(*first);
  auto second = codec::from_json(codec::version(), text);
  if (!second)
    fail("the re-encoded snapshot does not decode: " + annals::render(second.error()) + "\n  "
           + text,
         codec::name(), version, payload);
  if (!same(*first, *second) || codec::to_json(*second) != text)
    fail("the re-encoded snapshot differs: " + text, codec::name(), version, payload);
}

using check_fn = void (*)(std::string_view, std::uint32_t, std::string_view);

struct target {
  std::string_view name;
  check_fn check;
};

template <class Codec>
constexpr target event(std::string_view name) {
  return {name, &check_event<Codec>};
}

template <class State>
constexpr target snapshot() {
  return {State::name, [](std::string_view, std::uint32_t v, std::string_view p) {
            check_snapshot<State>(v, p);
          }};
}

// Byte 0 of the input, modulo the size, picks one of these.
constexpr target targets[] = {
  event<fz::codec>(fz::goal::name),
  event<fz::codec>(fz::note::name),
  event<fz::codec>(fz::point::name),
  event<bank_codec>(bank::opened::name),
  event<bank_codec>(bank::deposited::name),
  event<bank_codec>(bank::withdrawn::name),
  event<bank_codec>(bank::closed::name),
  event<match_codec>(match::scheduled::name),
  event<match_codec>(match::kicked_off::name),
  event<match_codec>(match::goal_scored::name),
  event<match_codec>(match::card_shown::name),
  event<match_codec>(match::substituted::name),
  event<match_codec>(match::half_time_called::name),
  event<match_codec>(match::second_half_started::name),
  event<match_codec>(match::full_time_called::name),
  snapshot<bank::account_state>(),
  snapshot<match::match_state>(),
  event<fz::codec>("fz.vanished"),             // a name no codec knows
  event<bank_codec>(match::goal_scored::name), // a name another aggregate's codec owns
};

} // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  for (auto err : {fz::codec::validate(), bank_codec::validate(), match_codec::validate()})
    if (err) {
      std::fprintf(stderr, "fuzz_event_decode: invalid codec: %s\n", annals::render(err).c_str());
      std::abort();
    }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 2)
    return 0;
  const auto& t = targets[data[0] % std::size(targets)];
  std::uint32_t version = data[1];
  std::string_view payload{reinterpret_cast<const char*>(data + 2), size - 2};
  t.check(t.name, version, payload);
  return 0;
}
