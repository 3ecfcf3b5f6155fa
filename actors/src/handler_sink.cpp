#include "internal/sink.hpp"

#include <utility>

#include "internal/offsets_table.hpp"

namespace annals::actors::internal {

namespace {

class handler_sink final : public sink {
public:
  handler_sink(std::string name, event_filter filter, std::shared_ptr<projection_handler> h,
               offset_store_ptr offsets)
    : name_(std::move(name)), filter_(std::move(filter)), handler_(std::move(h)),
      offsets_(std::move(offsets)) {}

  caf::expected<std::uint64_t> open() override {
    return offsets_->load(name_);
  }

  batch_outcome apply(std::span<const persistence::event_record> batch,
                      std::uint64_t prev) override {
    batch_outcome out{prev, 0, {}};
    // Another instance of this projection sharing the store (another process) moves the
    // offset: this one stops before handing it events that instance has applied already.
    if (auto stored = offsets_->load(name_); !stored || *stored != prev) {
      out.err = stored ? offset_moved_error(name_, "its offset store", prev, *stored)
                       : std::move(stored.error());
      return out;
    }
    for (const auto& rec : batch) {
      if (filter_.matches(rec)) {
        try {
          handler_->apply(rec);
        } catch (...) {
          out.err = handler_error(name_, rec, current_exception_text());
          break;
        }
        ++out.applied;
      }
      out.last_good = rec.offset;
    }
    if (out.last_good != prev) {
      // A moved offset is the cause of whatever the handler ran into, so it is reported
      // first; any other failure to store comes after the handler's.
      if (auto err = offsets_->advance(name_, prev, out.last_good);
          err && (!out.err || is(err, projection_errc::offset_moved))) {
        if (is(err, projection_errc::offset_moved))
          out.last_good = prev; // nothing was stored: this instance stays where it was
        out.err = std::move(err);
      }
    }
    return out;
  }

  delivery guarantee() const noexcept override {
    return delivery::at_least_once;
  }

  caf::error reset() override {
    try {
      handler_->reset();
    } catch (...) {
      return make_error(projection_errc::handler_failed,
                        "projection '" + name_ + "': reset threw: " + current_exception_text());
    }
    return offsets_->save(name_, 0);
  }

private:
  std::string name_;
  event_filter filter_;
  std::shared_ptr<projection_handler> handler_;
  offset_store_ptr offsets_;
};

} // namespace

std::shared_ptr<sink> make_handler_sink(std::string name, event_filter filter,
                                        std::shared_ptr<projection_handler> handler,
                                        offset_store_ptr offsets) {
  return std::make_shared<handler_sink>(std::move(name), std::move(filter), std::move(handler),
                                        std::move(offsets));
}

} // namespace annals::actors::internal
