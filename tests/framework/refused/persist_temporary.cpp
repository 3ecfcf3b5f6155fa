// Must not compile: an event that owns memory given to persist as a temporary (or with
// std::move, which persist cannot tell apart). g++ 12 destroys such a temporary inside a
// co_await statement twice; the build of this file is a test that expects persist's
// static_assert message.

#include <string>

#include <boost/describe.hpp>

#include "annals/aggregate.hpp"

namespace refused {

struct opened {
  static constexpr auto name = "refused.opened";
  std::string id;
  std::string owner;
};
BOOST_DESCRIBE_STRUCT(opened, (), (id, owner))

struct opened_state {
  std::string owner;
  void apply(const opened& e) {
    owner = e.owner;
  }
};

struct open {
  std::string id;
  std::string owner;
};

class account : public annals::aggregate<opened_state, opened> {
public:
  annals::task<void> handle(open cmd) {
#if defined(ANNALS_REFUSED_MOVE)
    opened e{std::move(cmd.id), std::move(cmd.owner)};
    co_await persist(std::move(e));
#else
    co_await persist(opened{std::move(cmd.id), std::move(cmd.owner)});
#endif
  }
};

} // namespace refused
