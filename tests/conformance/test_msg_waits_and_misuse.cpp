// Conformance (suite of test_msg.cpp): a blocking wait times out, then is
// woken by a message that comes while it sleeps; misuse of the API gets
// clear errors, with addresses in each provider's own form.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <fstream>
#include <string>

#include "../common/child.hpp"
#include "conformance.hpp"

namespace {
// Whether thread tid of process pid is asleep (state S in its stat line).
bool thread_sleeping(pid_t pid, pid_t tid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/task/" + std::to_string(tid) + "/stat");
  std::string line;
  if (!std::getline(f, line)) return false;
  const auto paren = line.rfind(')');  // the command name may hold spaces and parentheses
  return paren != std::string::npos && paren + 2 < line.size() && line[paren + 2] == 'S';
}
}  // namespace

TEST_P(conformance, blocking_wait_times_out_then_wakes) {
  char buf[8] = {};
  ASSERT_EQ(b.ep.recv(buf, sizeof buf), errc::ok);
  cq_entry e;
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(b.cq.wait(e, 50), errc::timed_out);
  EXPECT_GE(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(45)) << "timed out early";
  // The sender sends only once this thread has said it is about to wait and
  // is seen asleep (after the wait's spin, WEFT_SPIN_US): the message must
  // wake the wait, which would otherwise end timed_out after 10 s.
  int about[2];
  ASSERT_EQ(::pipe(about), 0);
  address baddr = *b.ep.name();
  const pid_t waiter = ::getpid();  // gtest runs the test on the main thread: its tid is the pid
  pid_t p = ::fork();
  ASSERT_GE(p, 0);
  if (p == 0) {
    forked_child();
    ::close(about[1]);
    int rc = 1;
    {
      node c = open_node(GetParam().provider, cap::msg);
      auto d = c.av.insert(baddr);
      char x = 0;
      if (d && read_within(about[0], &x, 1, std::chrono::seconds(10))) {
        bool asleep = false;
        const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (!(asleep = thread_sleeping(waiter, waiter)) && std::chrono::steady_clock::now() < until) {
          timespec ts{0, 100000};
          ::nanosleep(&ts, nullptr);
        }
        cq_entry done;
        if (c.ep.send("wake", 4, *d, nullptr) == errc::ok && c.cq.wait(done, 10000) == errc::ok)
          rc = asleep ? 0 : 7;  // the message left before this process exits
        else
          rc = 2;
      }
    }
    ::_exit(rc);
  }
  child_guard guard(p);
  ::close(about[0]);
  ASSERT_EQ(::write(about[1], "w", 1), 1);
  const errc r = b.cq.wait(e, 10000);
  const child_status st = guard(wait_child(p, std::chrono::seconds(20)));
  ::close(about[1]);
  EXPECT_EQ(r, errc::ok) << "the message came while the wait slept: it must wake it (" << to_string(r) << ")";
  EXPECT_EQ(std::string(buf, 4), "wake");
  EXPECT_TRUE(st.exited_ok()) << "sender " << st.describe() << " (7: the waiter was never seen asleep)";
}

TEST_P(conformance, api_misuse_gets_clear_errors) {
  char buf[8] = {};
  EXPECT_EQ(a.ep.send(buf, 8, 12345, nullptr), errc::invalid_argument) << "unknown address handle";
  EXPECT_EQ(b.ep.recv(buf, 8, 777, nullptr), errc::invalid_argument) << "unknown source handle";
  // Addresses in this provider's own form: one where no endpoint is, and
  // malformed ones.
  const address own = *a.ep.name();
  ASSERT_EQ(own.format, a.inf.format);
  if (GetParam().provider == "shm") {
    // shm opens the peer's region at insert: no endpoint, no entry
    auto bad = a.av.insert(address::from_string(addr_format::shm_name, "weft.0.1.99999"));
    ASSERT_FALSE(bad);
    EXPECT_TRUE(bad.error().code == errc::not_found || bad.error().code == errc::peer_dead) << bad.error().message;
    EXPECT_FALSE(bad.error().message.empty());
    auto garbage = a.av.insert(address::from_string(addr_format::shm_name, "../../etc/passwd"));
    ASSERT_FALSE(garbage);
    EXPECT_EQ(garbage.error().code, errc::invalid_argument) << garbage.error().message;
  } else {
    // tcp connects on the first send: the address of a closed port is
    // accepted, and the send to it fails with a clear error
    ASSERT_EQ(own.format, addr_format::inet);
    sockaddr_in sa{};
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof sa;
    const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
    ASSERT_EQ(::getsockname(fd, reinterpret_cast<sockaddr*>(&sa), &sl), 0);
    ::close(fd);  // nobody listens there now
    address nobody;
    nobody.format = addr_format::inet;
    nobody.size = sizeof sa;
    std::memcpy(nobody.bytes.data(), &sa, sizeof sa);
    auto bad = a.av.insert(nobody);
    ASSERT_TRUE(bad) << bad.error().message;
    int ctx = 0;
    ASSERT_EQ(a.ep.send(buf, 8, *bad, &ctx), errc::ok);
    outcome o = next(a, {}, 10000);
    ASSERT_TRUE(o.error) << "a send to an address nobody listens on fails";
    EXPECT_EQ(o.err.context, &ctx);
    EXPECT_EQ(o.err.err, errc::peer_dead) << o.err.msg;
    EXPECT_NE(std::string(o.err.msg), "");
    ASSERT_TRUE(a.av.remove(*bad));
    address short_addr = own;  // too short for a sockaddr_in
    short_addr.size = 3;
    auto garbage = a.av.insert(short_addr);
    ASSERT_FALSE(garbage);
    EXPECT_EQ(garbage.error().code, errc::invalid_argument) << garbage.error().message;
    address wrong_family = own;  // the size of a sockaddr_in, the family of something else
    const sa_family_t unix_family = AF_UNIX;
    std::memcpy(wrong_family.bytes.data(), &unix_family, sizeof unix_family);
    auto garbage2 = a.av.insert(wrong_family);
    ASSERT_FALSE(garbage2);
    EXPECT_EQ(garbage2.error().code, errc::invalid_argument) << garbage2.error().message;
  }
  EXPECT_FALSE(a.av.lookup(999));
  auto looked = a.av.lookup(a2b);
  ASSERT_TRUE(looked);
  EXPECT_EQ(*looked, *b.ep.name()) << "lookup returns the inserted address";
  // remove: the handle stops working, inserting again works
  ASSERT_TRUE(a.av.remove(a2b));
  EXPECT_EQ(a.ep.send(buf, 8, a2b, nullptr), errc::invalid_argument) << "removed handle";
  EXPECT_FALSE(a.av.lookup(a2b));
  EXPECT_FALSE(a.av.remove(a2b)) << "removing twice is an error";
  a2b = insert(a, b);
  ASSERT_EQ(b.ep.recv(buf, 8), errc::ok);
  ASSERT_EQ(a.ep.inject("again!", 6, a2b), errc::ok);
  ASSERT_TRUE(next(b, {&a}).ok);
  // endpoint not enabled
  auto e = a.dom.open_endpoint(a.inf);
  ASSERT_TRUE(e);
  EXPECT_EQ(e->send(buf, 8, a2b, nullptr), errc::bad_state);
  auto en = e->enable();
  ASSERT_FALSE(en) << "enable without a CQ must fail";
  EXPECT_NE(en.error().message.find("completion queue"), std::string::npos);
  // too many iovs
  std::vector<::iovec> many(a.inf.tx.iov_limit + 1, ::iovec{buf, 1});
  EXPECT_EQ(a.ep.sendv(many, a2b, nullptr), errc::invalid_argument);
  // peek is a tagged operation
  ::iovec v{buf, 8};
  EXPECT_EQ(b.ep.recvmsg(msg_desc{&v, 1, addr_unspec, 0, 0, 0, nullptr}, flag::peek), errc::invalid_argument);
  // a second CQ for the same direction is refused (the first keeps working)
  auto other = a.dom.open_cq(8);
  ASSERT_TRUE(other);
  auto twice = a.ep.bind(*other, flag::receive);
  ASSERT_FALSE(twice);
  EXPECT_EQ(twice.error().code, errc::bad_state);
  // closed and default handles answer bad_state instead of crashing
  endpoint none;
  EXPECT_EQ(none.send(buf, 8, 0, nullptr), errc::bad_state);
  EXPECT_EQ(none.recv(buf, 8), errc::bad_state);
  EXPECT_FALSE(none.enable());
  completion_queue nocq;
  cq_entry ce;
  EXPECT_EQ(nocq.read(ce), errc::bad_state);
  EXPECT_EQ(nocq.wait(ce, 1), errc::bad_state);
  address_vector noav;
  EXPECT_FALSE(noav.insert(*b.ep.name()));
}

