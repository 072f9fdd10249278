package activities

// OrDefault returns v, or def when v is zero or negative. It reads a config
// field documented as "5s when zero": a negative duration, count or size is
// never meant literally (it would be a timeout already expired, or a ticker
// that panics), so it takes the default too. A field where a negative value
// means something (off) must test for it before calling OrDefault.
func OrDefault[T ~int | ~int32 | ~int64 | ~float64](v, def T) T {
	if v <= 0 {
		return def
	}
	return v
}
