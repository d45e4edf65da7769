// The tcp rule for a peer whose kernel holds our data (prov/tcp/liveness_rule.hpp,
// docs/design.md "Peer failure (tcp RDM endpoints)"), over simulated TCP_INFO
// readings taken every timeout/8 as liveness.cpp takes them. Times in ms.
#include <gtest/gtest.h>

#include <cstdint>
#include <functional>

#include "prov/tcp/liveness_rule.hpp"

using weft::prov::tcp::judge;
using weft::prov::tcp::kernel_view;
using weft::prov::tcp::verdict;
using weft::prov::tcp::watch_state;

namespace {

constexpr std::uint64_t timeout = 2000;
constexpr std::uint64_t step = timeout / 8;
constexpr std::uint64_t never = ~std::uint64_t{0};

// Reads the kernel at 0, step, 2 step ... up to `end` (the data entered the
// kernel at 0); returns when the first death was judged, or never.
std::uint64_t first_death(const std::function<kernel_view(std::uint64_t)>& kernel, std::uint64_t end,
                          std::uint64_t start = 1'000'000) {
  watch_state s;
  s.holding = true;
  s.since = start;
  for (std::uint64_t t = 0; t <= end; t += step)
    if (judge(kernel(t), s, start + t, timeout) == verdict::dead) return t;
  return never;
}

// The kernel retransmitting into a silent host from 0 on, with a base RTO
// of rto0: the RTO doubles at each retransmission (capped at 120 s).
std::uint64_t backed_off_rto(std::uint64_t t, std::uint64_t rto0) {
  std::uint64_t rto = rto0, next = rto0;
  while (next <= t) {
    rto = std::min<std::uint64_t>(rto * 2, 120'000);
    next += rto;
  }
  return rto;
}

}  // namespace

TEST(tcp_liveness_rule, a_cut_link_with_data_in_flight_is_dead_within_the_timeout_and_a_reading) {
  const std::uint64_t t = first_death(
      [](std::uint64_t now) {
        kernel_view k;
        k.unacked = 10;
        k.since_ack = now;
        k.since_data = 60'000 + now;  // the peer sent us nothing lately
        k.rto = backed_off_rto(now, 200);
        return k;
      },
      20'000);
  EXPECT_GT(t, timeout);
  EXPECT_LE(t, timeout + step);
}

TEST(tcp_liveness_rule, one_lost_retransmission_is_not_a_death_once_the_rto_backed_off_past_the_timeout) {
  // A receiver under memory pressure: the RTO has backed off to 3.2 s (no
  // round-trip samples), every other segment is dropped: each gap between
  // acknowledgements is one RTO, longer than the timeout.
  const std::uint64_t t = first_death(
      [](std::uint64_t now) {
        kernel_view k;
        k.unacked = 10;
        k.since_ack = now % 3200;  // answered at each retransmission
        k.since_data = 60'000 + now;
        k.rto = 3200;
        return k;
      },
      60'000);
  EXPECT_EQ(t, never) << "declared dead at " << t << " ms";
}

TEST(tcp_liveness_rule, two_lost_retransmissions_in_a_row_past_the_timeout_are_a_death) {
  // After the answer at 0 with the RTO at 3.2 s: retransmission at 3.2 s
  // (lost, RTO 6.4 s), next at 9.6 s; silence passes the RTO at 6.4 s.
  const std::uint64_t t = first_death(
      [](std::uint64_t now) {
        kernel_view k;
        k.unacked = 10;
        k.since_ack = now;
        k.since_data = 60'000 + now;
        k.rto = now < 3200 ? 3200 : 6400;
        return k;
      },
      60'000);
  EXPECT_GT(t, 6400u);
  EXPECT_LE(t, 6400 + step);
}

TEST(tcp_liveness_rule, a_peer_that_sends_us_data_is_alive_though_it_acknowledges_nothing_new) {
  const std::uint64_t t = first_death(
      [](std::uint64_t now) {
        kernel_view k;
        k.unacked = 10;
        k.since_ack = now;  // its acknowledgement number stands still: no new tcpi_last_ack_recv
        k.since_data = now % 100;
        k.rto = backed_off_rto(now, 200);
        return k;
      },
      60'000);
  EXPECT_EQ(t, never) << "declared dead at " << t << " ms";
}

TEST(tcp_liveness_rule, one_lost_probe_behind_a_long_closed_window_is_not_a_death) {
  // The probe interval has backed off to 120 s, every probe answered but
  // the one at 120 s: probes reaches 2 at 240 s, with 240 s of silence,
  // and the answer to the second probe comes 1 ms later (read before it,
  // at 240 s exactly).
  const std::uint64_t t = first_death(
      [](std::uint64_t now) {
        kernel_view k;
        k.notsent = 1 << 20;
        k.rto = 200;
        if (now < 120'000) {
          k.since_ack = now;
        } else if (now < 240'000) {
          k.since_ack = now;
          k.probes = 1;
        } else if (now == 240'000) {
          k.since_ack = now;
          k.probes = 2;
        } else {
          k.since_ack = now - 240'001;
        }
        k.since_data = 600'000 + now;
        return k;
      },
      400'000);
  EXPECT_EQ(t, never) << "declared dead at " << t << " ms";
}

TEST(tcp_liveness_rule, a_closed_window_with_two_probes_unanswered_is_a_death) {
  // Host gone while the window was closed and probes came every RTO-ish:
  // probes 1 at 400 ms, 2 at 1200 ms (base RTO 200 ms, interval doubling).
  const std::uint64_t t = first_death(
      [](std::uint64_t now) {
        kernel_view k;
        k.notsent = 1 << 20;
        k.rto = 200;
        k.probes = now < 400 ? 0 : now < 1200 ? 1 : now < 2800 ? 2 : 3;
        k.since_ack = now;
        k.since_data = 60'000 + now;
        return k;
      },
      60'000);
  EXPECT_GT(t, timeout);
  EXPECT_LE(t, timeout + step);
}

TEST(tcp_liveness_rule, a_host_gone_behind_a_long_closed_window_is_dead_after_two_probe_intervals) {
  // The documented bound: with the probe interval backed off to 120 s, the
  // host vanishing after an answered probe at 0 is seen when the second
  // unanswered probe (240 s) has waited a whole RTO, within a reading.
  const std::uint64_t t = first_death(
      [](std::uint64_t now) {
        kernel_view k;
        k.notsent = 1 << 20;
        k.rto = 200;
        k.probes = now < 120'000 ? 0 : now < 240'000 ? 1 : 2;
        k.since_ack = now;
        k.since_data = 600'000 + now;
        return k;
      },
      400'000);
  EXPECT_GE(t, 240'000u + 200);
  EXPECT_LE(t, 240'000u + 200 + step);
}

TEST(tcp_liveness_rule, a_busy_receiver_answering_its_probes_is_alive) {
  const std::uint64_t t = first_death(
      [](std::uint64_t now) {
        kernel_view k;
        k.notsent = 1 << 20;
        k.rto = 200;
        k.since_ack = now % 30'000;  // answered probes, every 30 s
        k.since_data = 600'000 + now;
        return k;
      },
      400'000);
  EXPECT_EQ(t, never) << "declared dead at " << t << " ms";
}

TEST(tcp_liveness_rule, silence_counts_from_when_the_kernel_started_holding_data) {
  // An idle connection's last acknowledgement is old: a write at 0 is not
  // a silence of an hour.
  watch_state s;
  kernel_view idle;
  idle.since_ack = 3'600'000;
  EXPECT_EQ(judge(idle, s, 0, timeout), verdict::idle);
  kernel_view k;
  k.unacked = 1;
  k.since_ack = 3'600'000;
  k.since_data = 3'600'000;
  k.rto = 200;
  EXPECT_EQ(judge(k, s, 10, timeout), verdict::alive);
  EXPECT_EQ(judge(k, s, 10 + timeout, timeout), verdict::alive);
  EXPECT_EQ(judge(k, s, 11 + timeout, timeout), verdict::dead);
}
