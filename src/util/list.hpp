#pragma once
// Intrusive doubly linked list and a fixed-capacity object pool: the data
// path allocates nothing, it takes and returns nodes.
#include <cstddef>
#include <cstdint>
#include <vector>

namespace weft::util {

struct list_node {
  list_node* prev = nullptr;
  list_node* next = nullptr;
};

// T derives from list_node.
template <class T>
class ilist {
 public:
  ilist() noexcept { head_.prev = head_.next = &head_; }
  ilist(const ilist&) = delete;
  ilist& operator=(const ilist&) = delete;
  [[nodiscard]] bool empty() const noexcept { return head_.next == &head_; }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  void push_back(T* n) noexcept {
    list_node* x = n;
    x->prev = head_.prev;
    x->next = &head_;
    head_.prev->next = x;
    head_.prev = x;
    ++size_;
  }
  void insert_before(T* pos, T* n) noexcept {  // pos is in the list
    list_node* p = pos;
    list_node* x = n;
    x->prev = p->prev;
    x->next = p;
    p->prev->next = x;
    p->prev = x;
    ++size_;
  }
  void erase(T* n) noexcept {
    list_node* x = n;
    x->prev->next = x->next;
    x->next->prev = x->prev;
    x->prev = x->next = nullptr;
    --size_;
  }
  [[nodiscard]] T* front() const noexcept { return empty() ? nullptr : static_cast<T*>(head_.next); }
  [[nodiscard]] T* next(T* n) const noexcept {
    list_node* x = static_cast<list_node*>(n)->next;
    return x == &head_ ? nullptr : static_cast<T*>(x);
  }
  // First element for which pred(T&) holds, in insertion order.
  template <class Pred>
  [[nodiscard]] T* find(Pred&& pred) const noexcept {
    for (list_node* x = head_.next; x != &head_; x = x->next)
      if (pred(*static_cast<T*>(x))) return static_cast<T*>(x);
    return nullptr;
  }

 private:
  list_node head_;
  std::size_t size_ = 0;
};

// Fixed pool: storage made once on the control path; get/put on the data path.
template <class T>
class pool {
 public:
  explicit pool(std::size_t n = 0) { reset(n); }
  void reset(std::size_t n) {
    items_.assign(n, T{});
    free_.clear();
    free_.reserve(n);
    for (std::size_t i = n; i-- > 0;) free_.push_back(static_cast<std::uint32_t>(i));
  }
  [[nodiscard]] T* get() noexcept {
    if (free_.empty()) return nullptr;
    T* t = &items_[free_.back()];
    free_.pop_back();  // capacity reserved: no allocation
    return t;
  }
  void put(T* t) noexcept { free_.push_back(index(t)); }
  [[nodiscard]] std::uint32_t index(const T* t) const noexcept {
    return static_cast<std::uint32_t>(t - items_.data());
  }
  [[nodiscard]] T* at(std::uint32_t i) noexcept { return i < items_.size() ? &items_[i] : nullptr; }
  [[nodiscard]] std::size_t capacity() const noexcept { return items_.size(); }
  [[nodiscard]] std::size_t available() const noexcept { return free_.size(); }

 private:
  std::vector<T> items_;
  std::vector<std::uint32_t> free_;
};

}  // namespace weft::util
