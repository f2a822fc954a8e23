<?php
return ['feature' => env('FEATURE_FLAG', 'off'), 'db' => env('DB_DATABASE', 'shop')];
