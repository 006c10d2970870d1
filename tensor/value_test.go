package tensor

import "testing"

func TestScopeValues(t *testing.T) {
	s := NewScope()
	defer s.Close()
	type k1 struct{}
	type k2 struct{}
	if s.Value(k1{}) != nil {
		t.Fatal("empty scope has a value")
	}
	if prev := s.SetValue(k1{}, 1); prev != nil {
		t.Fatalf("prev = %v", prev)
	}
	s.SetValue(k2{}, "two")
	if prev := s.SetValue(k1{}, 3); prev != 1 {
		t.Fatalf("prev = %v, want 1", prev)
	}
	if s.Value(k1{}) != 3 || s.Value(k2{}) != "two" {
		t.Fatalf("values %v %v", s.Value(k1{}), s.Value(k2{}))
	}
	if prev := s.SetValue(k1{}, nil); prev != 3 || s.Value(k1{}) != nil || s.Value(k2{}) != "two" {
		t.Fatalf("remove: prev %v, now %v %v", prev, s.Value(k1{}), s.Value(k2{}))
	}
}
