// The exactly-once sink into a Xapian index: each batch and the projection's offset in one
// Xapian transaction (annals/actors/xapian_projection.hpp says how a batch runs).

#include "annals/actors/xapian_projection.hpp"

#include <charconv>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include <xapian.h>

#include "annals/persistence/redact.hpp"

namespace annals::actors {

namespace {

class xapian_sink final : public projection_sink {
public:
  xapian_sink(xapian_projection_options opts, std::shared_ptr<xapian_projection_handler> h)
    : opts_(std::move(opts)), handler_(std::move(h)), key_(xapian_offset_key(opts_.name)) {}

  ~xapian_sink() override {
    close();
  }

  caf::expected<std::uint64_t> open() override {
    close(); // a retry after a failed start
    std::error_code ec;
    std::filesystem::create_directories(opts_.path, ec);
    if (ec)
      return fail("cannot create the directory", ec.message());
    try {
      db_ = std::make_unique<Xapian::WritableDatabase>(opts_.path, Xapian::DB_CREATE_OR_OPEN);
    } catch (const Xapian::DatabaseLockError& e) {
      return make_error(projection_errc::read_model_failed,
                        "projection '" + opts_.name + "': the Xapian index " + opts_.path
                          + " is locked by another writer (a projection in this or another "
                            "process has it open): "
                          + persistence::one_line(e.get_description()));
    } catch (const Xapian::Error& e) {
      return fail("cannot open", e.get_description());
    }
    auto stored = stored_offset();
    if (!stored)
      return std::move(stored.error());
    return stored->value_or(0);
  }

  batch_outcome apply(std::span<const persistence::event_record> batch,
                      std::uint64_t prev) override {
    batch_outcome out{prev, 0, {}};
    if (batch.empty())
      return out;
    if (!db_) {
      out.err = fail("cannot apply a batch", "the index is not open");
      return out;
    }
    // Checked before any event: if another writer has moved the offset (an instance that
    // had the directory before this one took the lock), this one stops here instead of
    // applying events that one has applied already.
    auto stored = stored_offset();
    if (!stored || stored->value_or(0) != prev) {
      out.err =
        stored ? offset_moved_error(opts_.name, where(), prev, *stored) : std::move(stored.error());
      return out;
    }
    try {
      caf::error handler_err;
      auto good = run(batch, batch.size(), &handler_err, out.applied);
      if (good == batch.size()) {
        commit(batch.back().offset);
        out.last_good = batch.back().offset;
        return out;
      }
      // A handler threw on event `good`: nothing of the batch stays, and the events before
      // that one are applied again, as their own commit.
      db_->cancel_transaction();
      out.applied = 0;
      out.err = std::move(handler_err);
      if (good == 0)
        return out;
      caf::error again;
      std::size_t applied = 0;
      if (run(batch, good, &again, applied) != good) {
        db_->cancel_transaction();
        out.err =
          make_error(projection_errc::handler_failed,
                     "projection '" + opts_.name + "': " + render(out.err)
                       + "; applying the events before it again failed too: " + render(again));
        return out;
      }
      commit(batch[good - 1].offset);
      out.last_good = batch[good - 1].offset;
      out.applied = applied;
      return out;
    } catch (const Xapian::Error& e) {
      cancel();
      out.last_good = prev;
      out.applied = 0;
      out.err = fail("cannot apply a batch", e.get_description());
      return out;
    }
  }

  caf::error reset() override {
    if (!db_) {
      auto opened = open();
      if (!opened)
        return std::move(opened.error());
    }
    try {
      db_->begin_transaction(true);
      try {
        handler_->reset(*db_);
      } catch (const Xapian::Error& e) {
        cancel();
        return make_error(projection_errc::handler_failed,
                          "projection '" + opts_.name + "': reset threw: " + e.get_description());
      } catch (...) {
        cancel();
        return make_error(projection_errc::handler_failed,
                          "projection '" + opts_.name
                            + "': reset threw: " + current_exception_text());
      }
      std::vector<Xapian::docid> ids;
      for (auto it = db_->postlist_begin(""); it != db_->postlist_end(""); ++it)
        ids.push_back(*it);
      for (auto id : ids)
        db_->delete_document(id);
      commit(0);
      return {};
    } catch (const Xapian::Error& e) {
      cancel();
      return fail("cannot commit the reset", e.get_description());
    }
  }

  delivery guarantee() const noexcept override {
    return delivery::exactly_once;
  }

private:
  // Begins a transaction and hands the first `n` records of `batch` to the handler (those
  // the filter matches). Returns `n`, or the index of the record whose handler threw (its
  // error in `*err`), leaving the transaction open either way.
  std::size_t run(std::span<const persistence::event_record> batch, std::size_t n, caf::error* err,
                  std::size_t& applied) {
    db_->begin_transaction(true);
    for (std::size_t i = 0; i < n; ++i) {
      const auto& rec = batch[i];
      if (!opts_.filter.matches(rec))
        continue;
      try {
        handler_->apply(*db_, rec);
      } catch (const Xapian::Error& e) { // not a std::exception
        *err = handler_error(opts_.name, rec, e.get_description());
        return i;
      } catch (...) {
        *err = handler_error(opts_.name, rec, current_exception_text());
        return i;
      }
      ++applied;
    }
    return n;
  }

  // Stores `offset` and commits the open transaction (flushed: durable).
  void commit(std::uint64_t offset) {
    db_->set_metadata(key_, std::to_string(offset));
    db_->commit_transaction();
  }

  // Ends an open transaction without its changes; a failure here leaves them uncommitted
  // all the same, and the index is opened anew.
  void cancel() {
    try {
      db_->cancel_transaction();
    } catch (const Xapian::InvalidOperationError&) { // no transaction open
    } catch (const Xapian::Error&) {
      close();
    }
  }

  void close() {
    if (!db_)
      return;
    try {
      db_->close();
    } catch (const Xapian::Error&) {
    }
    db_.reset();
  }

  caf::expected<std::optional<std::uint64_t>> stored_offset() {
    std::string text;
    try {
      text = db_->get_metadata(key_);
    } catch (const Xapian::Error& e) {
      return fail("cannot read the stored offset", e.get_description());
    }
    if (text.empty())
      return std::optional<std::uint64_t>{};
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size())
      return fail("cannot read the stored offset",
                  "metadata " + key_ + " is '" + text + "', not an offset");
    return std::optional<std::uint64_t>{v};
  }

  std::string where() const {
    return "Xapian index " + opts_.path;
  }

  caf::error fail(std::string_view what, std::string_view detail) const {
    return make_error(projection_errc::read_model_failed,
                      "projection '" + opts_.name + "': " + std::string{what} + " on " + where()
                        + ": " + persistence::one_line(detail));
  }

  xapian_projection_options opts_;
  std::shared_ptr<xapian_projection_handler> handler_;
  std::string key_;
  std::unique_ptr<Xapian::WritableDatabase> db_;
};

} // namespace

xapian_projection_handler::~xapian_projection_handler() = default;
void xapian_projection_handler::reset(Xapian::WritableDatabase&) {}

std::shared_ptr<projection_sink>
make_xapian_sink(std::shared_ptr<xapian_projection_handler> handler,
                 xapian_projection_options opts) {
  return std::make_shared<xapian_sink>(std::move(opts), std::move(handler));
}

projection spawn_projection(caf::actor_system& sys, persistence::journal_ptr journal,
                            std::shared_ptr<xapian_projection_handler> handler,
                            xapian_projection_options opts) {
  sink_options so{opts.name, opts.page_size, opts.max_queued_batches};
  return spawn_projection(sys, std::move(journal),
                          make_xapian_sink(std::move(handler), std::move(opts)), std::move(so));
}

std::string xapian_offset_key(std::string_view name) {
  return "annals.offset." + std::string{name};
}

std::uint64_t xapian_stored_offset(const Xapian::Database& db, std::string_view name) {
  auto text = db.get_metadata(xapian_offset_key(name));
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc{} || end != text.data() + text.size())
    return 0;
  return v;
}

} // namespace annals::actors
