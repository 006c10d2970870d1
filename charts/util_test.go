package charts_test

import "encoding/json"

func jsonLine(v any) (string, error) {
	b, err := json.Marshal(v)
	return string(b), err
}
