"""crampwatch band simulator: synthetic nights with ground truth and a BLE GATT peripheral."""
