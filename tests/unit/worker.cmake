# Unit tests of referral-worker's logic (included by tests/CMakeLists.txt).
referral_unit_test(test_worker_config unit/test_worker_config.cpp LIBS referral_worker)
referral_unit_test(test_worker_rules unit/test_worker_rules.cpp LIBS referral_worker)
referral_unit_test(test_worker_event unit/test_worker_event.cpp LIBS referral_worker)
referral_unit_test(test_worker_stripe unit/test_worker_stripe.cpp LIBS referral_worker)
referral_unit_test(test_worker_retain unit/test_worker_retain.cpp LIBS referral_worker)
