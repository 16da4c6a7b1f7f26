package itemgen

import (
	"encoding/json"
	"testing"
)

func TestAppend(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		i    int
		want string
	}{
		{0, `{"i":0,"name":"item-0","price":0.00}`},
		{42, `{"i":42,"name":"item-42","price":0.42}`},
		{1999, `{"i":1999,"name":"item-1999","price":9.99}`},
		{123456, `{"i":123456,"name":"item-123456","price":4.56}`},
	} {
		got := Append([]byte("x"), tc.i)
		if string(got) != "x"+tc.want {
			t.Errorf("Append(%d) = %s, want %s", tc.i, got[1:], tc.want)
		}
		var v struct {
			I     int     `json:"i"`
			Name  string  `json:"name"`
			Price float64 `json:"price"`
		}
		if err := json.Unmarshal(got[1:], &v); err != nil || v.I != tc.i {
			t.Errorf("Append(%d) is not the JSON object it names: %v %+v", tc.i, err, v)
		}
	}
}
